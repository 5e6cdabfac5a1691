"""Classifier-free guidance and the step from noise to images: the one place where a batch is doubled."""
import torch

from ..vae import decode
from .precision import sampling_precision
from .timing import stage

# the one home of the guidance defaults: DiT's for pictures (its sample.py) and for FID (its sample_ddp.py)
GUIDANCE_FOR_PICTURES = 4.0
GUIDANCE_FOR_FID = 1.5
NO_GUIDANCE = 1.0  # the library functions' default: the conditional model alone


def guided(model, labels, cfg_scale: float = NO_GUIDANCE, stats: dict | None = None, precision: str = "fp32"):
    """model_fn(x, t) for class `labels`: with cfg_scale > 1, the batch is doubled with the null class
    (`num_classes`) and `model.forward_with_cfg(..., cfg_scale=cfg_scale)` guides it (DiT's and SiT's rule);
    the guided half is returned, in x's dtype whatever the `precision` of the network (gen.sampling.precision).
    `stats`, if given, counts "model_evaluations"."""
    null_labels = torch.full_like(labels, model.config.num_classes)

    def model_fn(x, t, guide: bool = True):  # guide=False: the conditional model (outside a guidance interval)
        if stats is not None:
            stats["model_evaluations"] = stats.get("model_evaluations", 0) + 1
        with sampling_precision(precision, x.device):
            if cfg_scale <= NO_GUIDANCE or not guide:
                return model(x, t, labels).to(x.dtype)
            doubled = model.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]),
                                             torch.cat([labels, null_labels]), cfg_scale=cfg_scale)
        return doubled[: len(x)].to(x.dtype)  # both halves are the same guided output

    return model_fn


@torch.no_grad()
def generate_latents(model, labels, noise, sample_fn, cfg_scale=NO_GUIDANCE, noise_sampler=None, stats=None,
                     progress=False, precision="fp32"):
    """Latents [B, C, H, W] for class `labels` [B] from starting `noise` [B, C, H, W]; `stats`, if given, also
    gathers the seconds of the "network" stage (gen.sampling.timing)."""
    if stats is not None:
        stats["batches"] = stats.get("batches", 0) + 1
    model_fn = guided(model, labels, cfg_scale, stats, precision)
    with stage(stats, "network", noise.device):
        return sample_fn(model_fn, noise, noise_sampler=noise_sampler, progress=progress)


def generate_images(model, vae, labels, noise, sample_fn, cfg_scale=NO_GUIDANCE, noise_sampler=None, stats=None,
                    progress=False, precision="fp32"):
    """Images in [-1, 1] (decoded by `vae`; None for pixel-space models), the network and the VAE in
    `precision`; `stats` gathers the seconds of the "network" and "VAE decode" stages."""
    latents = generate_latents(model, labels, noise, sample_fn, cfg_scale, noise_sampler, stats, progress, precision)
    if vae is None:
        return latents.clamp(-1, 1)
    with stage(stats, "VAE decode", latents.device), sampling_precision(precision, latents.device):
        return decode(vae, latents).clamp(-1, 1)
