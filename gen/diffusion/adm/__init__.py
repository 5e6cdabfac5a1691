"""ADM Gaussian diffusion as DiT uses it: schedules, losses (MSE + VB, learned sigma), respacing, DDPM and DDIM.

    diffusion = create_diffusion("")        # training: 1000 linear steps
    sampler = create_diffusion("ddim50")    # a respaced chain for sampling
"""
from .gaussian import GaussianDiffusion, LossType, ModelMeanType, ModelVarType, named_beta_schedule
from .respace import SpacedDiffusion, create_diffusion, space_timesteps

__all__ = ["GaussianDiffusion", "LossType", "ModelMeanType", "ModelVarType", "SpacedDiffusion", "create_diffusion",
           "named_beta_schedule", "space_timesteps"]
