"""Two tensor helpers every diffusion file uses: per-sample means and per-sample scalars broadcast over x."""
import torch


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch one: [B, ...] -> [B]."""
    return x.mean(dim=list(range(1, x.ndim)))


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] with `ndim` dimensions, so per-sample scalars broadcast over images."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))
