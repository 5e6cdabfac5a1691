"""The Stable Diffusion VAE that maps images to the latents DiT/SiT train on (diffusers AutoencoderKL).

`--vae ema|mse` names the hub weights DiT used; any other value is a local folder or a hub name; `none`
trains in pixel space (the demo's choice: no VAE to download, and 16-pixel digits need none).

The network's input space: the VAE's latents times LATENT_SCALE (`--latent-norm scalar`, DiT's and SiT's), or
those normalised per channel by the training data's statistics (`--latent-norm channel`, LightningDiT's
`latent_norm`): `use_channel_norm(vae, norm)` attaches them to the VAE, `normalize` applies them to training inputs,
and `decode` undoes them, so every sampler, grid and evaluation decodes through the same VAE object.
"""
import functools
import math
import os
import socket
import warnings
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import torch

from common.errors import InvalidValue, UserError

LATENT_SCALE = 0.18215  # scales SD-VAE latents to about unit variance, as DiT and SiT do
HUB_NAMES = {"ema": "stabilityai/sd-vae-ft-ema", "mse": "stabilityai/sd-vae-ft-mse"}
DEFAULT_VAE = "ema"  # DiT's and SiT's: what weights files that record no VAE (official ones) were trained with
DECODE_BATCH_FP32 = 32  # latents per VAE decode call in float32: 7 GiB at 256 px
DECODE_BATCH_HALF = 64  # in bf16/fp16: 10 GiB; an H200 decodes 398 images/s so, 321 at 32 (measured)
HUB_PROBE_SECONDS = 3.0  # huggingface_hub retries an unreachable hub for about 30 s; one quick connection says it


class VAEUnavailableError(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class ChannelNorm:
    """Per-channel mean and standard deviation of the scaled latents (LightningDiT's latents_stats.pt)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_record(cls, record: dict, channels: int, source: str) -> "ChannelNorm":
        """From an export's record; InvalidValue when it is not `channels` finite means and positive deviations."""
        mean, std = record.get("mean"), record.get("std")
        numbers = [value for values in (mean, std) if isinstance(values, list) for value in values]
        if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == channels
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
                and all(v > 0 for v in std)):
            raise InvalidValue(f"{source}: its latent_norm must hold {channels} finite means and {channels} positive "
                               f"standard deviations, got {record!r}")
        return cls(tuple(map(float, mean)), tuple(map(float, std)))

    def to_record(self) -> dict:
        return {key: list(values) for key, values in asdict(self).items()}

    def shaped(self, values, like: torch.Tensor) -> torch.Tensor:
        return channel_tensor(values, like.dtype, like.device)


@functools.lru_cache(maxsize=32)
def channel_tensor(values: tuple, dtype, device) -> torch.Tensor:
    """[1, C, 1, 1] of `values`, made once per device and dtype: no host-to-device copy at each training step."""
    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


def use_channel_norm(vae, norm: ChannelNorm | None):
    """Make `vae`'s network space the channel-normalised one (None: the scalar one); `vae` may not be None."""
    vae.channel_norm = norm


def normalize(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (encode's, or a latent set's) -> the network's input space."""
    norm = getattr(vae, "channel_norm", None)
    if norm is None:
        return latents
    return (latents - norm.shaped(norm.mean, latents)) / norm.shaped(norm.std, latents)


def load_vae(name: str, device="cpu", dtype=torch.float32):
    """AutoencoderKL for `name` (ema, mse, a local folder or a hub name) in eval mode; None for "none"."""
    if name in (None, "none"):
        return None
    from diffusers.models import AutoencoderKL

    repo = HUB_NAMES.get(name, name)
    try:  # loaded in `dtype` (not cast after): diffusers warns on a cast, and some VAEs keep modules in float32
        if os.path.isdir(repo):
            vae = AutoencoderKL.from_pretrained(repo, torch_dtype=dtype)
        else:
            vae = _from_hub(AutoencoderKL, repo, torch_dtype=dtype)
    except (OSError, ValueError) as error:
        local_hint = "" if not os.path.isdir(repo) else f" ({repo} exists but holds no AutoencoderKL: {error})"
        raise VAEUnavailableError(f"cannot load the VAE {repo!r}{local_hint}; {_offline_fix(name)}") from None
    return vae.to(device=device).eval().requires_grad_(False)


def _from_hub(model_class, repo, **options):
    """The hub cache first (no network); else, only when the hub answers, a download."""
    try:
        with warnings.catch_warnings():  # diffusers passes an argument this huggingface_hub only warns about
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return model_class.from_pretrained(repo, local_files_only=True, **options)
    except (OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise VAEUnavailableError(f"cannot load the VAE {repo!r}: it is not in the hub cache and HF_HUB_OFFLINE is "
                                  f"set; {_offline_fix(repo)}")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not hub_reachable(endpoint):
        raise VAEUnavailableError(f"cannot load the VAE {repo!r}: it is not in the hub cache and {endpoint} does not "
                                  f"answer (no network?); {_offline_fix(repo)}")
    return model_class.from_pretrained(repo, **options)


def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub's host opens within `timeout` seconds."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


def _offline_fix(name: str) -> str:
    hub_name = HUB_NAMES.get(name, name if "/" in name else HUB_NAMES[DEFAULT_VAE])
    return (f"offline, download it where there is a network with `hf download {hub_name} --local-dir vae` "
            f"(huggingface_hub's CLI; older ones: huggingface-cli), copy the folder here and pass --vae ./vae")


def downsampling_factor(vae) -> int:
    """Pixels per latent along a side: 2 per down block after the first (8 for SD's VAE); 1 without a VAE."""
    return 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(vae, image_size: int) -> tuple[int, int]:
    """(channels, side) of the network's input for images of `image_size` pixels."""
    if vae is None:
        return 3, image_size
    factor = downsampling_factor(vae)
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
    """Latents in the network's space -> images of about [-1, 1], not clamped: an SD-VAE overshoots a little
    (-1.12..1.23 seen); to_uint8 and the image writers clamp, as DiT's save_image does. Decoded
    decode_batch(vae.dtype) latents at a time: at 256 px a batch of 256 needs 57 GiB in float32 at once, 32 at a
    time 7 GiB, at the same speed."""
    if vae is None:
        return latents
    norm = getattr(vae, "channel_norm", None)
    if norm is not None:
        latents = latents * norm.shaped(norm.std, latents) + norm.shaped(norm.mean, latents)
    scaled = (latents / LATENT_SCALE).to(vae.dtype)
    return torch.cat([vae.decode(chunk).sample.float() for chunk in scaled.split(decode_batch(vae.dtype))])


def decode_batch(dtype: torch.dtype) -> int:
    """Latents per decode call for a VAE in `dtype`."""
    return DECODE_BATCH_FP32 if dtype == torch.float32 else DECODE_BATCH_HALF


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images [B, 3, H, W] -> uint8 [B, H, W, 3], rounded as DiT's sample_ddp.py does."""
    return torch.clamp(127.5 * images + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8)
