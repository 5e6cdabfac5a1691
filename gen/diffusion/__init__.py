"""Diffusion processes for the two model families: ADM Gaussian diffusion (DiT) and SiT's transport.

    diffusion = create_diffusion("250")            # DiT: DDPM over 250 respaced steps
    transport = create_transport("Linear", "velocity")
    sample_fn = Sampler(transport).sample_ode(sampling_method="heun2", num_steps=50)
"""
from .gaussian import GaussianDiffusion, LossType, ModelMeanType, ModelVarType, named_beta_schedule
from .paths import GVPPath, LinearPath, Path, VPPath
from .respace import SpacedDiffusion, create_diffusion, space_timesteps
from .samplers import Sampler
from .transport import ModelType, PathType, Transport, WeightType, create_transport

__all__ = [
    "GVPPath",
    "GaussianDiffusion",
    "LinearPath",
    "LossType",
    "ModelMeanType",
    "ModelType",
    "ModelVarType",
    "Path",
    "PathType",
    "Sampler",
    "SpacedDiffusion",
    "Transport",
    "VPPath",
    "WeightType",
    "create_diffusion",
    "create_transport",
    "named_beta_schedule",
    "space_timesteps",
]
