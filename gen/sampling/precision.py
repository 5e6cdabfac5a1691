"""The arithmetic of sampling and evaluation (`--precision`): the network's steps and the VAE's decode.

    fp32  float32 throughout, TF32 off (exact; what the CPU does anyway)
    tf32  float32 tensors, matmuls and convolutions in TF32 on GPUs (DiT's sample_ddp.py default)
    bf16  bfloat16 autocast for the network and the VAE (float32 where autocast keeps it: norms, softmax); the
          sampler's state and its update stay float32, so only the network's output is rounded

    auto  bf16 on GPUs, fp32 on the CPU (the default)

The sampler's own arithmetic (the diffusion or ODE update, the noise) is float32 in every setting. Why auto
chooses what it chooses, measured, is in docs/sampling.md ("Precision").
"""
import contextlib

import torch

from common.errors import InvalidValue

PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_PRECISION = "auto"
# docs/sampling.md: on each device the fastest setting whose FID stays within float32's seed-to-seed spread
AUTO_PRECISION = {"cuda": "bf16", "cpu": "fp32"}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InvalidValue(f"unknown precision {precision!r}; use one of {list(PRECISIONS)} (auto is resolved by "
                           f"resolve_precision)")
    return precision


def resolve_precision(precision: str, device) -> str:
    """`precision`, with auto replaced by the setting chosen for `device`'s type."""
    if precision == "auto":
        return AUTO_PRECISION.get(torch.device(device).type, "fp32")
    return check_precision(precision)


def vae_dtype(precision: str) -> torch.dtype:
    """The dtype a VAE used only for decoding is loaded in: bfloat16 has float32's range, so no overflow."""
    return torch.bfloat16 if check_precision(precision) == "bf16" else torch.float32


@contextlib.contextmanager
def sampling_precision(precision: str, device):
    """Run the block in `precision` on `device` (a torch.device or its name); TF32 flags are restored after."""
    check_precision(precision)
    device_type = torch.device(device).type
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
