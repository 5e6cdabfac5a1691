"""Per-image randomness: image i of seed s draws its class, its starting noise and every step's noise from its
own generator, `torch.Generator().manual_seed(s * SEED_STRIDE + i)`, in that order. So an image does not depend
on the number of processes, the batch size or resuming, for every sampler, stochastic ones included."""
import numpy as np
import torch

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


class PerImageNoise:
    """noise_sampler(x): a standard normal row for each image of the batch from that image's generator."""

    def __init__(self, generators):
        self.generators = list(generators)

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if len(like) != len(self.generators):
            raise ValueError(f"a batch of {len(like)} for {len(self.generators)} image generators")
        rows = [torch.randn(like.shape[1:], generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(rows).to(device=like.device, dtype=like.dtype)  # drawn on the CPU: any device agrees


def draw_batch(seed: int, indices, latent_shape, num_classes: int, class_order="random", labels=None):
    """(labels [B], starting noise [B, C, H, W], noise_sampler) of images `indices`; `labels`, if given,
    replace the drawn classes (grids choose theirs)."""
    generators = [image_generator(seed, i) for i in indices]
    drawn = [draw_label(g, i, num_classes, class_order) for g, i in zip(generators, indices, strict=True)]
    noise_sampler = PerImageNoise(generators)
    channels, side = latent_shape
    noise = noise_sampler(torch.empty(len(generators), channels, side, side))
    chosen = torch.as_tensor(drawn if labels is None else list(labels), dtype=torch.long)
    return chosen, noise, noise_sampler
