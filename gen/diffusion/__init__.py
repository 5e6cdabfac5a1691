"""Diffusion processes for the two model families: ADM Gaussian diffusion (`adm/`, DiT) and SiT's
stochastic interpolants (`transport/`).

    diffusion = create_diffusion("250")            # DiT: DDPM over 250 respaced steps
    transport = create_transport("Linear", "velocity")
    sample_fn = Sampler(transport).sample_ode(sampling_method="heun2", num_steps=50)
"""
from .adm import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    SpacedDiffusion,
    create_diffusion,
    named_beta_schedule,
    space_timesteps,
)
from .transport import (
    GVPPath,
    LinearPath,
    ModelType,
    Path,
    PathType,
    Sampler,
    Transport,
    VPPath,
    WeightType,
    create_transport,
)

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
