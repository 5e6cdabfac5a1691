"""A weights file made ready to sample: its model, its VAE and its diffusion or transport settings, read from the
file and checked against the caller's choices (sample.py's flags, GenerationPipeline.from_pretrained's arguments),
so that the command line and the Python pipeline resolve a file the same way. A choice that contradicts the file
fails in one line; a choice left None takes the file's record, else DiT's and SiT's defaults.

    weights = load_for_sampling("model.safetensors", "cuda", precision="bf16")
    weights.model, weights.vae, weights.latent_shape, weights.process, weights.recorded_sampler
"""
import os
from dataclasses import dataclass

import torch

from common.errors import MissingInput, UserError

from ..family import Family, family_of
from ..models import set_vca_kernels
from ..sampling.precision import vae_dtype
from ..settings.sampler import fill_defaults
from ..vae import DEFAULT_VAE, HUB_NAMES, downsampling_factor, load_vae, use_channel_norm
from .export import load_pretrained, read_settings

WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")  # exports; official and other torch files


@dataclass
class SamplingWeights:
    model: torch.nn.Module  # in eval mode, on the device
    vae: object  # diffusers AutoencoderKL; None for pixel models
    vae_name: str  # ema, mse, a folder, a hub name or "none"
    latent_shape: tuple[int, int]  # (channels, side) of the network's input
    image_size: int  # pixels of the images made
    process: dict  # diffusion (DiT) or transport (SiT) settings
    recorded_sampler: dict | None  # sampler, steps and guidance of training's samples (export.save_pretrained)


def load_guide(path, model, device, latent_norm=None):
    """The autoguidance guide of `path` (an export, a checkpoint folder or an official .pt), checked to take the same
    inputs and classes as `model`, in the same input space (`latent_norm`: the model's channel statistics)."""
    guide = load_pretrained(path, device)
    if read_settings(path).get("latent_norm") != latent_norm:
        raise UserError(f"--guide-ckpt {path} was trained on latents normalised otherwise than {model.name}'s "
                        f"(--latent-norm and its statistics): pass a guide trained on the same latent set")
    mine, theirs = model.config, guide.config
    wanted = dict(family=mine.family, input_size=mine.input_size, in_channels=mine.in_channels,
                  num_classes=mine.num_classes)
    differing = {key: getattr(theirs, key) for key, value in wanted.items() if getattr(theirs, key) != value}
    if differing:
        raise UserError(f"--guide-ckpt {path} holds {guide.name} with {differing}, but the guide must take "
                        f"{model.name}'s inputs and classes ({wanted}); pass an earlier or smaller model of the same "
                        f"run or data")
    return guide


def resolve_vae(ckpt, chosen: str | None, recorded: str | None, official=False) -> str:
    """The VAE: `chosen`, else the file's (read_settings: "none" for an unrecorded RGB model), else DiT's. Pixels
    and latents cannot be swapped; two SD-VAEs can (their encoders are the same; DiT samples with either decoder)."""
    if chosen is None:
        if recorded not in (None, "none", *HUB_NAMES) and not os.path.isdir(recorded):
            raise UserError(f"{ckpt} records the VAE {recorded!r}, which is no local folder: a file may not make this "
                            f"command fetch from the hub; pass --vae {recorded} if you trust it, or --vae FOLDER")
        return recorded or DEFAULT_VAE
    if official and chosen == "none":
        raise UserError(f"--vae none does not fit {ckpt}: official DiT/SiT .pt checkpoints are latent models; "
                        f"drop --vae (sd-vae-ft-ema) or pass --vae mse")
    if recorded is not None and (recorded == "none") != (chosen == "none"):
        raise UserError(f"--vae {chosen} contradicts {ckpt}, trained with --vae {recorded}; drop --vae")
    return chosen


def resolve_process(ckpt, model, recorded: dict | None, chosen: dict) -> dict:
    """The diffusion (DiT) or transport (SiT) settings: the file's, else the family's defaults; `chosen` values
    (None: not chosen) are allowed only where they agree with the file."""
    known = family_of(model).recorded_process(model, recorded)
    process = {}
    for key, value in known.items():
        flag = chosen.get(key)
        if flag is not None and flag != value and (recorded is not None or key == "learn_sigma"):
            raise UserError(f"--{key.replace('_', '-')} {flag} contradicts {ckpt}, trained with {value}; "
                            f"drop the flag")
        process[key] = value if flag is None else flag
    return process


def load_for_sampling(ckpt, device, *, vae: str | None = None, precision: str = "fp32", model_name=None,
                      image_size=None, num_classes=None, vca_kernels="auto", compile=False,
                      process: dict | None = None, check_model=None) -> SamplingWeights:
    """The model, VAE and settings of `ckpt` (an export, a training checkpoint folder or an official DiT/SiT .pt),
    checked against each other and the caller's choices; `precision` resolved (no auto): the VAE's dtype.
    `check_model(model)`, if given, runs as soon as the model is loaded (a caller's own refusal)."""
    ckpt = os.fspath(ckpt)
    if not os.path.exists(ckpt):
        raise MissingInput(f"{ckpt} not found; pass an exported .safetensors, a training checkpoint folder or an "
                           f"official DiT/SiT .pt")
    if os.path.isfile(ckpt) and not ckpt.lower().endswith(WEIGHTS_SUFFIXES):
        raise UserError(f"{ckpt} is not a weights file; pass an exported .safetensors, a training checkpoint folder "
                        f"or an official DiT/SiT .pt")
    settings = read_settings(ckpt)
    vae_name = resolve_vae(ckpt, vae, settings.get("vae"), official=not settings)  # {}: an official .pt
    vae_model = load_vae(vae_name, device, dtype=vae_dtype(precision))
    if settings.get("latent_norm") is not None:  # the network's space: its training data's channel statistics
        if vae_model is None:
            raise UserError(f"{ckpt} was trained on channel-normalised latents; --vae none does not fit it: drop --vae")
        use_channel_norm(vae_model, settings["latent_norm"])
    options = {} if num_classes is None else {"num_classes": num_classes}
    if not settings and image_size is not None:  # an official .pt: its latent side follows this VAE's factor
        options["input_size"] = image_size // downsampling_factor(vae_model)
    model = load_pretrained(ckpt, device, expected_name=model_name, image_size=image_size, **options)
    if check_model is not None:
        check_model(model)
    set_vca_kernels(model, vca_kernels)
    if compile:  # the instance's forward, so that forward_with_cfg's call is compiled too
        model.forward = torch.compile(model.forward)
    config = model.config
    if num_classes is not None and config.num_classes != num_classes:
        raise UserError(f"{ckpt} has {config.num_classes} classes, not --num-classes {num_classes}")
    factor = downsampling_factor(vae_model)
    channels = 3 if vae_model is None else vae_model.config.latent_channels
    image_size = image_size or config.input_size * factor
    if (channels, image_size) != (config.in_channels, config.input_size * factor):
        raise UserError(f"{model.name} makes {config.in_channels}x{config.input_size}x{config.input_size} "
                        f"inputs but --vae {vae_name} at --image-size {image_size} needs {channels}x"
                        f"{image_size // factor}x{image_size // factor}; check --vae (none for pixel models) and "
                        f"--image-size")
    resolved = resolve_process(ckpt, model, settings.get("process"), process or {})
    return SamplingWeights(model, vae_model, vae_name, (channels, config.input_size), image_size, resolved,
                           settings.get("sampler"))


@dataclass
class Sampling:
    """A weights file ready to sample: its weights, the sampler settings as filled, and the sampler."""
    weights: SamplingWeights
    family: Family
    settings: object  # the caller's settings object, its None values filled
    sample_fn: object  # gen.sampling's contract: sample_fn(model_fn, noise, *, noise_sampler, progress)


def ready_sampler(weights: SamplingWeights, settings, source, *, pictures: bool) -> Sampling:
    """The one way from loaded weights to a sampler: the sampler and guidance options of `settings` (sample.py's
    flags, a pipeline call's arguments, training's record) left None take the file's record, else the defaults
    (pictures: DiT's guidance for grids, else for FID); another family's option fails, naming `source`."""
    family = family_of(weights.model)
    family.fill_from_record(settings, source, weights.recorded_sampler)
    fill_defaults(settings, pictures=pictures)
    return Sampling(weights, family, settings, family.build_sampler(settings, weights.process))


def prepare_sampling(ckpt, device, settings, *, pictures: bool, **loading) -> Sampling:
    """`ckpt` loaded (load_for_sampling's `loading` options) and its sampler made from `settings` (ready_sampler)."""
    return ready_sampler(load_for_sampling(ckpt, device, **loading), settings, os.fspath(ckpt), pictures=pictures)
