"""N-sample runs: images 0..N-1 as PNGs in a folder, split over the processes, resumable, then packed into
`samples.npz` (ADM's format) for the FID pipeline."""
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from common.errors import UserError
from common.files import atomic_open, check_output_folder, folder_entries, save_samples_npz

from ..vae import to_uint8
from .guidance import GUIDANCE_FOR_FID, generate_images
from .seeding import draw_batch
from .timing import stage

SETTINGS_FILE = "sample_settings.json"
IO_THREADS = min(16, os.cpu_count() or 1)  # PNG encoding and decoding run in zlib, which releases the GIL


def png_path(sample_dir, index: int) -> str:
    return os.path.join(sample_dir, f"{index:06d}.png")


def write_png(image_uint8: np.ndarray, path: str):
    with atomic_open(path) as handle:  # a PNG under its real name is always complete: resuming trusts it
        Image.fromarray(image_uint8).save(handle, format="PNG")


def check_settings(sample_dir, settings: dict):
    """Refuse to mix images of other settings, or files of anyone else, into `sample_dir`, and record the settings
    once (the record marks the folder as sample.py's: resuming trusts its PNGs). The main process alone calls it:
    the others' settings are the same, and a second process reading the folder while this one writes the record
    would see its temporary file and call it someone else's."""
    path = os.path.join(sample_dir, SETTINGS_FILE)
    if not os.path.exists(path):  # not ours: it must be empty, but for a record a kill -9 cut short
        cut_short = {name for name in folder_entries(sample_dir) if name.startswith(f"{SETTINGS_FILE}.tmp-")}
        check_output_folder(sample_dir, "--sample-dir", ignored=cut_short)
        with atomic_open(path, "w") as handle:
            json.dump(settings, handle, indent=1)
        return
    with open(path) as handle:
        saved = json.load(handle)
    changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if changed:
        raise UserError(f"{sample_dir} holds samples made with other settings (was, now: {changed}); "
                        f"use another --sample-dir or delete this one")


def sample_to_folder(accelerator, model, vae, sample_fn, *, sample_dir, num_samples, batch_size, latent_shape,
                     seed=0, cfg_scale=GUIDANCE_FOR_FID, class_order="random", precision="fp32", stats=None) -> int:
    """Write images 0..num_samples-1 not yet in `sample_dir` as PNGs, split over the processes; returns how
    many all processes made. Every process must call it (it synchronises before starting). PNGs are written
    by threads while the next batch samples; `stats` gathers seconds per stage (gen.sampling.timing)."""
    pending = [i for i in range(num_samples) if not os.path.exists(png_path(sample_dir, i))]
    accelerator.wait_for_everyone()  # all processes list the same pending images before anyone writes
    mine = pending[accelerator.process_index :: accelerator.num_processes]
    num_classes = model.config.num_classes
    bar = tqdm(total=len(pending), unit="img", disable=not accelerator.is_main_process, dynamic_ncols=True)
    with ThreadPoolExecutor(IO_THREADS) as writers:
        writing = []
        for start in range(0, len(mine), batch_size):
            indices = mine[start : start + batch_size]
            labels, noise, noise_sampler = draw_batch(seed, indices, latent_shape, num_classes, class_order)
            device = accelerator.device
            images = generate_images(model, vae, labels.to(device), noise.to(device), sample_fn, cfg_scale,
                                     noise_sampler, stats, precision=precision)
            with stage(stats, "PNG writing"):  # what the sampling waits for: the previous batch's PNGs
                finish(writing)
                writing = [writers.submit(write_png, image, png_path(sample_dir, index))
                           for index, image in zip(indices, to_uint8(images).numpy(), strict=True)]
            bar.update(min(len(indices) * accelerator.num_processes, bar.total - bar.n))  # main's share for all
        with stage(stats, "PNG writing"):
            finish(writing)
    bar.close()
    return len(pending)


def finish(futures):
    """Wait for the writes; the first failure (a full disk, say) is raised here, not lost in a thread."""
    for future in futures:
        future.result()


def read_png(path, shape=None) -> np.ndarray:
    """A sample PNG as uint8 [H, W, 3]; a damaged one (a copy cut short) or one of another size than `shape` is
    named, with the way to redo it."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as error:  # truncated, not a PNG: PIL's message does not name the file
        raise UserError(f"cannot read sample {path} ({type(error).__name__}: {' '.join(str(error).split())}); "
                        f"delete it and rerun the same command to make it again") from None
    if shape is not None and array.shape != tuple(shape):
        raise UserError(f"sample {path} is {array.shape[1]}x{array.shape[0]} but this run makes {shape[1]}x{shape[0]} "
                        f"images, so it is not one of them; move it away and rerun the same command to make it")
    return array


def pack_npz(sample_dir, num_samples: int, labels: np.ndarray, shape=None) -> str:
    """`sample_dir/samples.npz`: arr_0 uint8 [N, H, W, 3] from the PNGs, arr_1 the classes (ADM's format); every
    PNG must have `shape` (H, W, 3), by default image 0's."""
    missing = [i for i in range(num_samples) if not os.path.exists(png_path(sample_dir, i))]
    if missing:
        raise UserError(f"{sample_dir} lacks {len(missing)} of {num_samples} images (first {missing[0]:06d}.png); "
                        f"rerun the same command to make them")
    shape = tuple(shape or read_png(png_path(sample_dir, 0)).shape)
    images = np.empty((num_samples, *shape), dtype=np.uint8)

    def read_into(i):
        images[i] = read_png(png_path(sample_dir, i), shape)

    with ThreadPoolExecutor(IO_THREADS) as readers:  # map re-raises a damaged PNG's error here
        list(tqdm(readers.map(read_into, range(num_samples)), total=num_samples, desc="packing samples.npz",
                  unit="img", dynamic_ncols=True))
    path = os.path.join(sample_dir, "samples.npz")
    save_samples_npz(path, images, labels)
    return path


@torch.no_grad()
def samples_in_memory(model, vae, sample_fn, *, latent_shape, cfg_scale, device, count=None, indices=None, seed=0,
                      batch_size=250, class_order="balanced", precision="fp32", progress=False):
    """(uint8 images [N, H, W, 3], labels [N]) of images `indices` (default 0..count-1), drawn exactly as
    sample_to_folder draws them: what training's final samples and evaluations use, so their images equal
    sample.py's."""
    indices = list(range(count) if indices is None else indices)
    images, labels = [], []
    for start in tqdm(range(0, len(indices), batch_size), desc="samples", unit="batch", disable=not progress,
                      leave=False):
        batch = indices[start : start + batch_size]
        batch_labels, noise, noise_sampler = draw_batch(seed, batch, latent_shape, model.config.num_classes,
                                                        class_order)
        generated = generate_images(model, vae, batch_labels.to(device), noise.to(device), sample_fn, cfg_scale,
                                    noise_sampler, precision=precision)
        images.append(to_uint8(generated).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)
