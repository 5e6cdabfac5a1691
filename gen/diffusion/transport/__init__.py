"""SiT's stochastic interpolants: Linear, GVP and VP paths; velocity, noise or score prediction; ODE and SDE.

    transport = create_transport("Linear", "velocity")
    sample_fn = Sampler(transport).sample_ode(sampling_method="heun2", num_steps=50)
"""
from .integrators import Sampler
from .paths import GVPPath, LinearPath, Path, VPPath
from .transport import ModelType, PathType, Transport, WeightType, create_transport

__all__ = ["GVPPath", "LinearPath", "ModelType", "Path", "PathType", "Sampler", "Transport", "VPPath",
           "WeightType", "create_transport"]
