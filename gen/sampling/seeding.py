"""Per-image randomness: image i of seed s draws its class, then its starting noise, from its own CPU generator,
`torch.Generator().manual_seed(s * SEED_STRIDE + i)`, once per batch; each stochastic step's noise is a pure
function of (s, i, step, element) computed on the batch's device (counter_normal.py), one call per step. So an
image does not depend on the number of processes, the batch size or resuming, for every sampler, stochastic
ones included."""
import math

import numpy as np
import torch

from .counter_normal import image_keys, step_normals

SEED_STRIDE = 1_000_003  # image i of seed s uses generator seed s * SEED_STRIDE + i (distinct for i < stride)
CLASS_ORDERS = ("random", "balanced")


def image_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * SEED_STRIDE + index)


def draw_label(generator, index: int, num_classes: int, class_order="random") -> int:
    """The class draw comes first in both orders, so "random" (uniform, as DiT's sample_ddp.py) and "balanced"
    (index mod num_classes) give an image the same noise."""
    label = int(torch.randint(num_classes, (1,), generator=generator))
    return index % num_classes if class_order == "balanced" else label


def image_labels(seed: int, count: int, num_classes: int, class_order="random") -> np.ndarray:
    """The classes of images 0..count-1 (what `samples.npz` stores as arr_1)."""
    return np.array([draw_label(image_generator(seed, i), i, num_classes, class_order) for i in range(count)],
                    dtype=np.int64)


class StepNoise:
    """noise_sampler(like): call k (k = 0, 1, ...) gives step k's standard normals of images `indices` of `seed`,
    computed on like's device in one call (no per-image loop, no CPU generator, no copy from the host)."""

    def __init__(self, seed: int, indices):
        self.seed = seed
        self.indices = [int(i) for i in indices]
        self.step = 0
        self.keys = {}  # device -> image keys: the indices cross to the device once per batch, not per step

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if len(like) != len(self.indices):
            raise ValueError(f"a batch of {len(like)} for the step noise of {len(self.indices)} images")
        if like.device not in self.keys:
            images = torch.tensor(self.indices, dtype=torch.int64, device=like.device)
            self.keys[like.device] = image_keys(self.seed, images)
        compute_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        normals = step_normals(self.keys[like.device], self.step, math.prod(like.shape[1:]), compute_dtype)
        self.step += 1
        return normals.reshape(like.shape).to(like.dtype)


def draw_batch(seed: int, indices, latent_shape, num_classes: int, class_order="random", labels=None):
    """(labels [B], starting noise [B, C, H, W], noise_sampler) of images `indices`; `labels`, if given,
    replace the drawn classes (grids choose theirs)."""
    indices = list(indices)
    generators = [image_generator(seed, i) for i in indices]
    drawn = [draw_label(g, i, num_classes, class_order) for g, i in zip(generators, indices, strict=True)]
    channels, side = latent_shape
    noise = torch.stack([torch.randn(channels, side, side, generator=g) for g in generators])
    chosen = torch.as_tensor(drawn if labels is None else list(labels), dtype=torch.long)
    return chosen, noise, StepNoise(seed, indices)
