"""Sampling: classifier-free guided latents for DiT (DDPM, DDIM, DPM-Solver++) and SiT (ODE, SDE), grids, and
deterministic, distributed, resumable N-sample generation into a folder of PNGs and a `samples.npz`.

    sample_fn = make_sampler("DiT", "ddim", num_steps=50)
    latents = generate_latents(model, labels, noise, sample_fn, cfg_scale=4.0)

N-sample mode gives image `i` its class and starting noise from `torch.Generator().manual_seed(seed *
1_000_003 + i)` (first a class draw, then the noise), so with the deterministic samplers (DDIM with eta 0,
DPM-Solver++, ODE) an image does not depend on the number of processes, the batch size or resuming.
DDPM and SDE also draw per-step noise, which the diffusion loops take from torch's global generator: it is
seeded per batch, so reruns of the same command reproduce, but another batch layout gives other images.
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .errors import InvalidValue, UserError
from .files import atomic_open, save_samples_npz
from .vae import decode, to_uint8

SEED_STRIDE = 1_000_003  # image i of seed s uses generator seed s * SEED_STRIDE + i (distinct for i < stride)
STEP_NOISE_OFFSET = 1 << 62  # keeps the per-batch step-noise seeds apart from the per-image seeds
DIT_SAMPLERS = ("ddpm", "ddim", "dpm-solver")
SIT_MODES = ("ODE", "SDE")
CLASS_ORDERS = ("random", "balanced")


# -- samplers: sample_fn(model_fn, x, model_kwargs) -> x at the data end -----------------------------------
def make_sampler(family: str, name: str | None = None, num_steps: int = 250, **options):
    """The sampler of a model family: DiT `name` "ddpm" (default), "ddim" or "dpm-solver" over `num_steps`
    evenly spaced steps; SiT `name` "ODE" (default) or "SDE" with SiT's options (path_type, prediction,
    loss_weight, train_eps, sample_eps, sampling_method, atol, rtol, reverse, diffusion_form,
    diffusion_norm, last_step, last_step_size). Returns sample_fn(model_fn, x, model_kwargs) -> latents."""
    if family == "DiT":
        return dit_sampler(name or "ddpm", num_steps, **options)
    if family == "SiT":
        return sit_sampler(name or "ODE", num_steps, **options)
    raise InvalidValue(f"unknown model family {family!r}; expected DiT or SiT")


def dit_sampler(name: str, num_steps: int, ddim_eta: float = 0.0):
    from .diffusion import create_diffusion

    if num_steps < 1:
        raise InvalidValue(f"--num-sampling-steps must be at least 1, got {num_steps}")
    if name not in DIT_SAMPLERS:
        raise InvalidValue(f"unknown DiT sampler {name!r}; use one of {list(DIT_SAMPLERS)}")
    if name == "dpm-solver":
        return lambda model_fn, x, kwargs: dpm_solver_sample(model_fn, x, kwargs, num_steps)
    diffusion = create_diffusion(str(num_steps))  # "N": any step count, evenly spaced over the 1000
    if name == "ddpm":
        return lambda model_fn, x, kwargs: diffusion.p_sample_loop(
            model_fn, x.shape, x, clip_denoised=False, model_kwargs=kwargs, device=x.device)
    return lambda model_fn, x, kwargs: diffusion.ddim_sample_loop(
        model_fn, x.shape, x, clip_denoised=False, model_kwargs=kwargs, device=x.device, eta=ddim_eta)


def dpm_solver_sample(model_fn, x, model_kwargs, num_steps: int):
    """DPM-Solver++ (2M) of diffusers on DiT's linear betas, driven by the eps channels of the network."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        algorithm_type="dpmsolver++", solver_order=2, prediction_type="epsilon")
    scheduler.set_timesteps(num_steps, device=x.device)
    for t in scheduler.timesteps:
        eps = model_fn(x, t.expand(len(x)), **model_kwargs)[:, : x.shape[1]]  # drop the learned-sigma half
        x = scheduler.step(eps, t, x).prev_sample
    return x


def sit_sampler(mode: str, num_steps: int, *, path_type="Linear", prediction="velocity", loss_weight=None,
                train_eps=None, sample_eps=None, sampling_method=None, atol=1e-6, rtol=1e-3, reverse=False,
                diffusion_form="sigma", diffusion_norm=1.0, last_step="Mean", last_step_size=0.04):
    from .diffusion import Sampler, create_transport

    check_sit_sampler(mode, num_steps, sampling_method)
    sampler = Sampler(create_transport(path_type, prediction, loss_weight, train_eps, sample_eps))
    if mode == "ODE":
        sample_fn = sampler.sample_ode(sampling_method=sampling_method or "dopri5", num_steps=num_steps,
                                       atol=atol, rtol=rtol, reverse=reverse)
    elif mode == "SDE":
        sample_fn = sampler.sample_sde(sampling_method=sampling_method or "Euler", diffusion_form=diffusion_form,
                                       diffusion_norm=diffusion_norm, last_step=last_step,
                                       last_step_size=last_step_size, num_steps=num_steps)
    else:
        raise InvalidValue(f"unknown SiT mode {mode!r}; use ODE or SDE")
    return lambda model_fn, x, kwargs: sample_fn(x, model_fn, **kwargs)[-1]


def check_sit_sampler(mode: str, num_steps: int, sampling_method: str | None):
    """Fail now, not after training, on a time grid too short or a method name that does not exist."""
    from torchdiffeq._impl.odeint import SOLVERS  # the names torchdiffeq.odeint accepts

    if num_steps < 2:
        raise InvalidValue(f"SiT's {mode} sampler needs --num-sampling-steps >= 2 (the points of its time grid), "
                           f"got {num_steps}")
    methods = sorted(SOLVERS) if mode == "ODE" else ["Euler", "Heun"]
    if sampling_method is not None and sampling_method not in methods:
        raise InvalidValue(f"unknown {mode} --sampling-method {sampling_method!r}; use one of {methods}")


# -- guidance --------------------------------------------------------------------------------------------
@torch.no_grad()
def generate_latents(model, labels, noise, sample_fn, cfg_scale: float = 1.0, stats: dict | None = None):
    """Latents [B, C, H, W] for class `labels` [B] from starting `noise` [B, C, H, W], as DiT/SiT sample.py.

    cfg_scale > 1: the batch is doubled with the null class (`num_classes`) and `model.forward_with_cfg`
    guides it; 1: plain `model.forward`. `stats`, if given, counts "batches" and "model_evaluations".
    """
    if cfg_scale > 1.0:
        null_labels = torch.full_like(labels, model.config["num_classes"])
        x, kwargs = torch.cat([noise, noise]), dict(y=torch.cat([labels, null_labels]), cfg_scale=cfg_scale)
        forward = model.forward_with_cfg
    else:
        x, kwargs, forward = noise, dict(y=labels), model.forward

    if stats is not None:
        stats["batches"] = stats.get("batches", 0) + 1

    def model_fn(*args, **model_kwargs):
        if stats is not None:
            stats["model_evaluations"] = stats.get("model_evaluations", 0) + 1
        return forward(*args, **model_kwargs)

    return sample_fn(model_fn, x, kwargs)[: len(noise)]  # the guided half; both halves are the same


def generate_images(model, vae, labels, noise, sample_fn, cfg_scale: float = 1.0, stats=None):
    """Images in [-1, 1] (decoded by `vae`; None for pixel-space models)."""
    return decode(vae, generate_latents(model, labels, noise, sample_fn, cfg_scale, stats)).clamp(-1, 1)


def sample_grid(model, vae, labels, sample_fn, *, latent_shape, seed=0, cfg_scale=4.0, device="cpu", stats=None):
    """Images for `labels` with DiT's sample.py seeding (torch.manual_seed(seed), then one batch of noise)."""
    torch.manual_seed(seed)
    channels, side = latent_shape
    noise = torch.randn(len(labels), channels, side, side, device=device)
    labels = torch.as_tensor(labels, device=device)
    return generate_images(model, vae, labels, noise, sample_fn, cfg_scale, stats)


# -- per-image randomness --------------------------------------------------------------------------------
def image_label_and_noise(seed: int, index: int, latent_shape, num_classes: int, class_order="random"):
    """Image `index`'s class and starting noise [C, H, W]; the class draw comes first in both orders, so
    "random" (uniform, as DiT's sample_ddp.py) and "balanced" (index mod num_classes) share the noise."""
    generator = torch.Generator().manual_seed(seed * SEED_STRIDE + index)
    label = int(torch.randint(num_classes, (1,), generator=generator))
    if class_order == "balanced":
        label = index % num_classes
    channels, side = latent_shape
    return label, torch.randn(channels, side, side, generator=generator)


def image_labels(seed: int, count: int, num_classes: int, class_order="random") -> np.ndarray:
    """The classes of images 0..count-1 (what `samples.npz` stores as arr_1)."""
    return np.array([image_label_and_noise(seed, i, (0, 0), num_classes, class_order)[0] for i in range(count)],
                    dtype=np.int64)


# -- the sample folder -----------------------------------------------------------------------------------
def png_path(sample_dir, index: int) -> str:
    return os.path.join(sample_dir, f"{index:06d}.png")


def write_png(image_uint8: np.ndarray, path: str):
    with atomic_open(path) as handle:  # a PNG under its real name is always complete: resuming trusts it
        Image.fromarray(image_uint8).save(handle, format="PNG")


def check_settings(sample_dir, settings: dict, is_main: bool):
    """Refuse to mix images of other settings into `sample_dir`; the main process records them once."""
    path = os.path.join(sample_dir, "sample_settings.json")
    if os.path.exists(path):
        with open(path) as handle:
            saved = json.load(handle)
        changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        if changed:
            raise UserError(f"{sample_dir} holds samples made with other settings (was, now: {changed}); "
                             f"use another --sample-dir or delete this one")
    elif is_main:
        with atomic_open(path, "w") as handle:
            json.dump(settings, handle, indent=1)


def sample_to_folder(accelerator, model, vae, sample_fn, *, sample_dir, num_samples, batch_size, latent_shape,
                     seed=0, cfg_scale=1.5, class_order="random", stats=None) -> int:
    """Write images 0..num_samples-1 not yet in `sample_dir` as PNGs, split over the processes; returns how
    many all processes made. Every process must call it (it synchronises before starting)."""
    pending = [i for i in range(num_samples) if not os.path.exists(png_path(sample_dir, i))]
    accelerator.wait_for_everyone()  # all processes list the same pending images before anyone writes
    mine = pending[accelerator.process_index :: accelerator.num_processes]
    num_classes = model.config["num_classes"]
    bar = tqdm(total=len(pending), unit="img", disable=not accelerator.is_main_process, dynamic_ncols=True)
    for start in range(0, len(mine), batch_size):
        indices = mine[start : start + batch_size]
        labels, noise = zip(*(image_label_and_noise(seed, i, latent_shape, num_classes, class_order)
                              for i in indices), strict=True)
        torch.manual_seed(STEP_NOISE_OFFSET + seed * SEED_STRIDE + indices[0])  # DDPM/SDE step noise
        images = generate_images(model, vae, torch.tensor(labels, device=accelerator.device),
                                 torch.stack(noise).to(accelerator.device), sample_fn, cfg_scale, stats)
        for index, image in zip(indices, to_uint8(images).numpy(), strict=True):
            write_png(image, png_path(sample_dir, index))
        bar.update(min(len(indices) * accelerator.num_processes, bar.total - bar.n))  # main's share stands for all
    bar.close()
    return len(pending)


def pack_npz(sample_dir, num_samples: int, labels: np.ndarray) -> str:
    """`sample_dir/samples.npz`: arr_0 uint8 [N, H, W, 3] from the PNGs, arr_1 the classes (ADM's format)."""
    missing = [i for i in range(num_samples) if not os.path.exists(png_path(sample_dir, i))]
    if missing:
        raise UserError(f"{sample_dir} lacks {len(missing)} of {num_samples} images (first {missing[0]:06d}.png); "
                         f"rerun the same command to make them")
    first = np.asarray(Image.open(png_path(sample_dir, 0)).convert("RGB"))
    images = np.empty((num_samples, *first.shape), dtype=np.uint8)
    for i in tqdm(range(num_samples), desc="packing samples.npz", unit="img", dynamic_ncols=True):
        images[i] = np.asarray(Image.open(png_path(sample_dir, i)).convert("RGB"))
    path = os.path.join(sample_dir, "samples.npz")
    save_samples_npz(path, images, labels)
    return path
