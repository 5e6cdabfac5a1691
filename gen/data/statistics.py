"""The training data's per-channel latent statistics, for `--latent-norm channel` (LightningDiT's latent_norm: the
mean and standard deviation over items, rows and columns of up to 10,000 randomly chosen latents)."""
import copy

import numpy as np
import torch

from ..vae import ChannelNorm, encode
from .images import collate_skipping_unreadable

STATISTICS_ITEMS = 10_000  # LightningDiT's compute_latent_stats


@torch.no_grad()
def channel_statistics(dataset, vae, *, from_latents: bool, device, seed: int, count: int = STATISTICS_ITEMS,
                       batch_size: int = 64) -> ChannelNorm:
    """Mean and (unbiased) standard deviation per channel of the scaled latents of `count` items of `dataset`
    drawn without replacement by `seed` (all of them when fewer): the same on every process and on resumption.
    Items of an image data set are encoded by `vae` (posterior samples seeded by `seed` too)."""
    chosen = np.random.default_rng(seed).choice(len(dataset), min(count, len(dataset)), replace=False)
    if getattr(dataset, "features", None) is not None:  # a latent set's REPA features: not read for this
        dataset = copy.copy(dataset)
        dataset.features = None
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, chosen.tolist()), batch_size=batch_size,
                                         collate_fn=collate_skipping_unreadable)
    generator = torch.Generator(device).manual_seed(seed)
    total = squares = None
    values = 0
    for images, _, _ in loader:
        if images is None:
            continue
        latents = images.to(device)
        if not from_latents:
            latents = encode(vae, latents, generator)
        latents = latents.double().transpose(0, 1).flatten(1)  # [C, items x rows x columns]
        total = latents.sum(1) if total is None else total + latents.sum(1)
        squares = latents.square().sum(1) if squares is None else squares + latents.square().sum(1)
        values += latents.shape[1]
    mean = total / values
    std = ((squares - values * mean.square()) / (values - 1)).clamp_min(0).sqrt()
    return ChannelNorm(tuple(mean.tolist()), tuple(std.tolist()))
