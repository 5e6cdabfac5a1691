"""Respaced chains (fewer sampling steps over the same process) and `create_diffusion`, DiT's entry point."""
import numpy as np
import torch

from .gaussian import GaussianDiffusion, LossType, ModelMeanType, ModelVarType, named_beta_schedule


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
    """The timesteps of a `num_timesteps` process to keep.

    section_counts: counts per equal section, as a list or "10,15,20" (the first third of the steps strided
    to 10, the next to 15, the last to 20; "250" is one section), or "ddimN": the DDIM paper's fixed integer
    stride giving exactly N steps.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired_count = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired_count:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {desired_count} steps of {num_timesteps} with an integer "
                             "stride; pick another ddimN")
        section_counts = [int(count) for count in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)  # fractional: both ends of the section kept
        steps += [start + round(stride * j) for j in range(count)]
        start += size
    return set(steps)


class SpacedDiffusion(GaussianDiffusion):
    """The base process restricted to `use_timesteps`: betas recomputed so that the kept steps have the
    base's alphas_cumprod, and the model shown the original timestep of each kept index."""

    def __init__(self, use_timesteps, **kwargs):
        self.use_timesteps = set(use_timesteps)
        self.original_num_steps = len(kwargs["betas"])
        base = GaussianDiffusion(**kwargs)
        self.timestep_map = sorted(t for t in self.use_timesteps if 0 <= t < self.original_num_steps)
        self.timestep_array = np.array(self.timestep_map, dtype=np.int64)
        kept_alphas_cumprod = base.alphas_cumprod[self.timestep_map]
        kwargs["betas"] = 1 - kept_alphas_cumprod / np.append(1.0, kept_alphas_cumprod[:-1])
        super().__init__(**kwargs)

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        return self.on_device("timestep_array", t.device)[t].to(t.dtype)


def create_diffusion(
    timestep_respacing,
    noise_schedule="linear",
    use_kl=False,
    sigma_small=False,
    predict_xstart=False,
    learn_sigma=True,
    rescale_learned_sigmas=False,
    diffusion_steps=1000,
) -> SpacedDiffusion:
    """DiT's diffusion: `timestep_respacing` "" or None for all `diffusion_steps`, else counts ("250",
    "10,20") or "ddimN"; `noise_schedule` "linear" or "cosine"; `use_kl` trains on the rescaled bound
    (else MSE, with the VB term rescaled by T/1000 if `rescale_learned_sigmas`); `predict_xstart` makes
    the network predict x_0 instead of eps; `learn_sigma` learns the variance in [beta~_t, beta_t], else
    it is fixed to beta_t, or to beta~_t with `sigma_small`."""
    betas = named_beta_schedule(noise_schedule, diffusion_steps)
    if use_kl:
        loss_type = LossType.RESCALED_KL
    elif rescale_learned_sigmas:
        loss_type = LossType.RESCALED_MSE
    else:
        loss_type = LossType.MSE
    if learn_sigma:
        model_var_type = ModelVarType.LEARNED_RANGE
    else:
        model_var_type = ModelVarType.FIXED_SMALL if sigma_small else ModelVarType.FIXED_LARGE
    if timestep_respacing is None or timestep_respacing == "":
        timestep_respacing = [diffusion_steps]
    return SpacedDiffusion(
        use_timesteps=space_timesteps(diffusion_steps, timestep_respacing),
        betas=betas,
        model_mean_type=ModelMeanType.START_X if predict_xstart else ModelMeanType.EPSILON,
        model_var_type=model_var_type,
        loss_type=loss_type,
    )
