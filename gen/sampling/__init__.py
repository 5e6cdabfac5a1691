"""Sampling: one sampler contract for DiT (DDPM, DDIM, DPM-Solver++) and SiT (ODE, SDE), classifier-free
guidance, per-image seeding, grids, and deterministic, distributed, resumable N-sample runs to `samples.npz`.

    sample_fn = make_sampler("DiT", "ddim", num_steps=50)              # from gen.family
    labels, noise, noise_sampler = draw_batch(seed=0, indices=range(8), latent_shape=(4, 32), num_classes=1000)
    latents = generate_latents(model, labels, noise, sample_fn, cfg_scale=4.0, noise_sampler=noise_sampler)

    samplers.py  the samplers (gen.family.make_sampler picks one by family)  guidance.py  guided model_fn, latents
    seeding.py   per-image generators, step noise   grid.py      class grids       folder.py  N-sample runs
    counter_normal.py  normals as a hash of (seed, image, step, element), computed on the device
    precision.py --precision (fp32, tf32, bf16)     timing.py    seconds per stage
A weights file made ready to sample (its model, VAE, settings and sampler): gen.weights.
"""
from .folder import check_settings, pack_npz, sample_to_folder, samples_in_memory
from .grid import grid_classes, sample_grid, save_grid
from .guidance import GUIDANCE_FOR_FID, GUIDANCE_FOR_PICTURES, NO_GUIDANCE, generate_images, generate_latents, guided
from .precision import DEFAULT_PRECISION, PRECISIONS, check_precision, resolve_precision, sampling_precision, vae_dtype
from .samplers import (
    DIT_SAMPLER_DEFAULTS,
    DIT_SAMPLERS,
    SIT_MODES,
    SIT_SAMPLER_DEFAULTS,
    check_sit_sampler,
    guided_within,
)
from .seeding import CLASS_ORDERS, SEED_STRIDE, StepNoise, draw_batch, image_labels

__all__ = ["CLASS_ORDERS", "DEFAULT_PRECISION", "DIT_SAMPLER_DEFAULTS", "DIT_SAMPLERS", "GUIDANCE_FOR_FID",
           "GUIDANCE_FOR_PICTURES", "NO_GUIDANCE", "PRECISIONS", "SEED_STRIDE", "SIT_MODES", "SIT_SAMPLER_DEFAULTS",
           "StepNoise", "check_precision", "check_settings", "check_sit_sampler", "draw_batch", "generate_images",
           "generate_latents", "grid_classes", "guided", "guided_within", "noise_level_of", "image_labels",
           "make_sampler", "pack_npz",
           "resolve_precision", "sample_grid", "sample_to_folder", "samples_in_memory", "sampling_precision",
           "save_grid", "vae_dtype"]
