"""The Stable Diffusion VAE that maps images to the latents DiT/SiT train on (diffusers AutoencoderKL).

`--vae ema|mse` names the hub weights DiT used; any other value is a local folder or a hub name; `none`
trains in pixel space (the demo's choice: no VAE to download, and 16-pixel digits need none).
"""
import os

import torch

from .errors import InvalidValue, UserError

LATENT_SCALE = 0.18215  # scales SD-VAE latents to about unit variance, as DiT and SiT do
HUB_NAMES = {"ema": "stabilityai/sd-vae-ft-ema", "mse": "stabilityai/sd-vae-ft-mse"}
DEFAULT_VAE = "ema"  # DiT's and SiT's: what weights files that record no VAE (official ones) were trained with


class VAEUnavailableError(UserError, RuntimeError):
    pass


def load_vae(name: str, device="cpu", dtype=torch.float32):
    """AutoencoderKL for `name` (ema, mse, a local folder or a hub name) in eval mode; None for "none"."""
    if name in (None, "none"):
        return None
    from diffusers.models import AutoencoderKL

    repo = HUB_NAMES.get(name, name)
    try:
        vae = AutoencoderKL.from_pretrained(repo)
    except (OSError, ValueError) as error:
        local_hint = "" if not os.path.isdir(repo) else f" ({repo} exists but holds no AutoencoderKL: {error})"
        raise VAEUnavailableError(
            f"cannot load the VAE {repo!r}{local_hint}; offline, download it where there is a network with "
            f"`huggingface-cli download {HUB_NAMES.get(name, 'stabilityai/sd-vae-ft-ema')} --local-dir vae`, "
            f"copy the folder here and pass --vae ./vae"
        ) from None
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def latent_shape(vae, image_size: int) -> tuple[int, int]:
    """(channels, side) of the network's input for images of `image_size` pixels."""
    if vae is None:
        return 3, image_size
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if image_size % factor:
        raise InvalidValue(f"image size {image_size} is not divisible by the VAE's downsampling factor {factor}")
    return vae.config.latent_channels, image_size // factor


@torch.no_grad()
def encode(vae, images: torch.Tensor, generator=None) -> torch.Tensor:
    """Images in [-1, 1] -> scaled latents (a sample of the posterior, as DiT's training does)."""
    if vae is None:
        return images
    posterior = vae.encode(images.to(vae.dtype)).latent_dist
    return posterior.sample(generator=generator).float() * LATENT_SCALE


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (not clamped)."""
    if vae is None:
        return latents
    return vae.decode((latents / LATENT_SCALE).to(vae.dtype)).sample.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images [B, 3, H, W] -> uint8 [B, H, W, 3], rounded as DiT's sample_ddp.py does."""
    return torch.clamp(127.5 * images + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8)
