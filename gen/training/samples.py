"""What training samples from the EMA model: class grids during and after training, and the final
`samples.npz` (ADM's format). The noise comes from gen.sampling's seeded draws, never from the training RNG."""

import numpy as np
import torch
from PIL import Image

from ..files import atomic_open, save_samples_npz
from ..sampling import SEED_STRIDE, STEP_NOISE_OFFSET, generate_images, image_label_and_noise, sample_grid
from ..vae import to_uint8

FINAL_SAMPLE_BATCH = 250


def grid_classes(num_classes: int, chosen=None) -> list[int]:
    """The classes shown, a row each: `chosen`, else all up to 10, else 8 spread evenly over the classes."""
    if chosen:
        return list(chosen)
    if num_classes <= 10:
        return list(range(num_classes))
    return np.linspace(0, num_classes - 1, 8).round().astype(int).tolist()


GRID_MIN_SIDE = 64


def save_grid(images_uint8: np.ndarray, columns: int, path: str):
    """uint8 [N, H, W, 3] -> one PNG, `columns` images a row; small images are enlarged (nearest neighbour)."""
    scale = max(1, GRID_MIN_SIDE // images_uint8.shape[1])  # 16-pixel digits would make a stamp-sized grid
    images_uint8 = images_uint8.repeat(scale, axis=1).repeat(scale, axis=2)
    count, height, width, channels = images_uint8.shape
    rows = count // columns
    grid = images_uint8[: rows * columns].reshape(rows, columns, height, width, channels)
    grid = grid.transpose(0, 2, 1, 3, 4).reshape(rows * height, columns * width, channels)
    with atomic_open(path) as handle:
        Image.fromarray(grid).save(handle, format="PNG")


@torch.no_grad()
def write_grid(ema, vae, sample_fn, path, *, classes, columns, latent_shape, cfg_scale, device, seed=0):
    """A grid of `columns` samples per class of `classes`, seeded as DiT's sample.py."""
    labels = [label for label in classes for _ in range(columns)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        images = sample_grid(ema, vae, labels, sample_fn, latent_shape=latent_shape, seed=seed,
                             cfg_scale=cfg_scale, device=device)
    save_grid(to_uint8(images).numpy(), columns, path)


@torch.no_grad()
def write_samples_npz(ema, vae, sample_fn, path, *, count, latent_shape, cfg_scale, device, seed=0) -> np.ndarray:
    """`count` samples, image i of class i mod num_classes with gen.sampling's per-image noise, as
    `path` (.npz: arr_0 uint8 [N, H, W, 3], arr_1 labels). Returns the images."""
    images, labels = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for start in range(0, count, FINAL_SAMPLE_BATCH):
            drawn = [image_label_and_noise(seed, i, latent_shape, ema.config["num_classes"], "balanced")
                     for i in range(start, min(start + FINAL_SAMPLE_BATCH, count))]
            batch_labels = torch.tensor([label for label, _ in drawn], device=device)
            noise = torch.stack([noise for _, noise in drawn]).to(device)
            torch.manual_seed(STEP_NOISE_OFFSET + seed * SEED_STRIDE + start)  # step noise seeded as sample.py
            images.append(to_uint8(generate_images(ema, vae, batch_labels, noise, sample_fn, cfg_scale)).numpy())
            labels.append(batch_labels.cpu().numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    save_samples_npz(path, images, labels)
    return images
