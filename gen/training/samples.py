"""What training samples from the EMA model: class grids during and after training, and the final
`samples.npz` (ADM's format), drawn with gen.sampling's per-image generators, never the training RNG."""

import numpy as np
import torch

from common.files import save_samples_npz

from ..sampling import sample_grid, samples_in_memory, save_grid


@torch.no_grad()
def write_grid(ema, vae, sample_fn, path, *, classes, columns, latent_shape, cfg_scale, device, seed=0,
               precision="fp32"):
    """A grid of `columns` samples per class of `classes`, each row labelled with its class id."""
    labels = [label for label in classes for _ in range(columns)]
    images = sample_grid(ema, vae, labels, sample_fn, latent_shape=latent_shape, seed=seed, cfg_scale=cfg_scale,
                         device=device, precision=precision)
    save_grid(images, columns, path, row_labels=[str(label) for label in classes])


def write_samples_npz(ema, vae, sample_fn, path, *, count, latent_shape, cfg_scale, device, seed=0,
                      precision="fp32", progress=False) -> np.ndarray:
    """`count` samples, image i of class i mod num_classes, as sample.py's balanced N-sample mode draws them,
    into `path` (.npz: arr_0 uint8 [N, H, W, 3], arr_1 labels). Returns the images."""
    images, labels = samples_in_memory(ema, vae, sample_fn, count=count, latent_shape=latent_shape,
                                       cfg_scale=cfg_scale, device=device, seed=seed, precision=precision,
                                       progress=progress)
    save_samples_npz(path, images, labels)
    return images
