"""Weights that describe themselves: safetensors whose metadata hold the model config, the VAE that made its
latents ("none": pixels), the diffusion or transport settings it was trained with (EDM2's habit: the encoder
is saved with every snapshot) and the sampler, steps and guidance of training's final samples, and the loader
for them.

    save_pretrained(ema_model, "DiT-S-2.safetensors", vae="ema", process=diffusion_settings,
                    sampler=dict(sampler="ddim", ddim_eta=0.0, num_sampling_steps=50, cfg_scale=1.5))
    model = load_pretrained("DiT-S-2.safetensors")               # built, loaded, in eval mode
    read_settings("DiT-S-2.safetensors")                         # {"vae": "ema", "process": {...}, "sampler": {...}}

`load_pretrained` also reads a training checkpoint folder (its `ema.safetensors`) and the official DiT/SiT
`.pt` files (name and image size from the arguments or the official file name; they record no settings).
Nothing is unpickled: `.pt` files go through `torch.load(weights_only=True)`.
"""
import json
import os
import re
from importlib import metadata

import torch

from common.errors import UserError
from common.files import save_safetensors

from ..family import family_named
from ..models import ModelConfig, build_model, create_model, load_official_state_dict, read_state_dict
from ..models.convert import describe_mismatch
from ..vae import ChannelNorm

FORMAT_KEY = "config"
CHECKPOINT_WEIGHTS = "ema.safetensors"  # the EMA export in each training checkpoint folder
OFFICIAL_FILE_NAME = re.compile(r"^(DiT|SiT)-(XL|L|B|S)-(\d+)-(\d+)x\d+\.pt$")  # e.g. DiT-XL-2-256x256.pt
VAE_DOWNSAMPLING = 8  # official checkpoints are latent models: input_size = image_size / 8


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, damaged, or of another model; the message names the fix."""


def _version() -> str:
    try:
        return metadata.version("vca-gen")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- export ----------------------------------------------------------------------------------------------------
def save_pretrained(model, path, ema: bool = True, dtype: torch.dtype | None = None, vae: str | None = None,
                    process: dict | None = None, sampler: dict | None = None, latent_norm=None) -> str:
    """Write `model`'s weights (optionally cast to `dtype`) and config to `path` (.safetensors) atomically.

    `ema` records whether these are EMA weights (pass the EMA module for sampling exports); `vae` the VAE of
    the latents ("none": pixels), `process` the diffusion or transport settings and `sampler` the sampler flags,
    steps and guidance that training sampled with (sample.py's defaults for this file), when known;
    `latent_norm` the per-channel latent statistics of --latent-norm channel (a gen.vae.ChannelNorm; None: scalar).
    """
    path = os.fspath(path)
    state_dict = read_state_dict(model.state_dict())  # drops DDP / torch.compile prefixes
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in state_dict.items()
    }
    info = {
        "format": "pt",
        "model_name": model.name,
        FORMAT_KEY: json.dumps(model.config.to_dict()),
        "vae": json.dumps(vae),
        "process": json.dumps(process),
        "sampler": json.dumps(sampler),
        "latent_norm": json.dumps(None if latent_norm is None else latent_norm.to_record()),
        "ema": json.dumps(bool(ema)),
        "dtype": str(dtype or next(iter(tensors.values())).dtype).removeprefix("torch."),
        "gen_version": _version(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_safetensors(tensors, path, metadata=info)  # a crash mid-write never leaves a truncated file behind
    return path


# -- import ----------------------------------------------------------------------------------------------------
def load_pretrained(path, device="cpu", *, expected_name: str | None = None, model_name: str | None = None,
                    image_size: int | None = None, **model_options):
    """A ready model (eval mode, on `device`) from an export, a training checkpoint folder or an official .pt.

    expected_name: fail unless the file holds this model. model_name / image_size / model_options: only for
    official .pt files, which carry no config (otherwise inferred from names like `DiT-XL-2-256x256.pt`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} not found; pass an exported .safetensors, a training "
                              f"checkpoint folder or an official DiT/SiT .pt")
    if os.path.isdir(path):
        model = _load_checkpoint_folder(path)
    elif path.endswith(".safetensors"):
        model = _load_export(path)
    else:
        model = _load_official(path, model_name or expected_name, image_size, **model_options)
    if expected_name is not None and model.name != expected_name:
        raise CheckpointError(f"{path} holds {model.name} weights, not {expected_name}; pass a {expected_name} "
                              f"checkpoint or ask for --model {model.name}")
    return model.to(device).eval()


def read_export_info(path) -> dict:
    """The metadata of an exported .safetensors: model_name, config (a dict), ema, dtype, gen_version."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            info = dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({error}); it may be truncated: "
                              f"export it again") from None
    if FORMAT_KEY not in info or "model_name" not in info:
        raise CheckpointError(f"{path} has no model config in its metadata, so it is not a gen export; "
                              f"export it with gen.save_pretrained, or load its tensors with read_state_dict")
    for key, default in ((FORMAT_KEY, "{}"), ("ema", "true"), ("vae", "null"), ("process", "null"),
                         ("sampler", "null"), ("latent_norm", "null")):
        try:
            info[key] = json.loads(info.get(key, default))
        except ValueError:
            raise CheckpointError(f"{path}: its metadata field {key!r} is not JSON, so the file was damaged or edited; "
                                  f"export it again") from None
    check_record(path, info)
    return info


RECORD_KINDS = {FORMAT_KEY: dict, "ema": bool, "vae": (str, type(None)), "process": (dict, type(None)),
                "sampler": (dict, type(None)), "latent_norm": (dict, type(None))}


def check_record(path, info: dict):
    """Each metadata field of an export is of its kind and, for the model and its process, within its ranges: a file
    from anywhere is refused in one line before anything is built from it."""
    for key, kind in RECORD_KINDS.items():
        if not isinstance(info[key], kind):
            raise CheckpointError(f"{path}: its metadata field {key!r} is {info[key]!r}, not a "
                                  f"{kind.__name__ if isinstance(kind, type) else kind[0].__name__}; export it again")
    try:
        config = ModelConfig.from_dict(info[FORMAT_KEY])
        if info["process"] is not None:
            family_named(config.family).check_process_record(info["process"])
        if info["latent_norm"] is not None:
            info["latent_norm"] = ChannelNorm.from_record(info["latent_norm"], config.in_channels, "the record")
    except (TypeError, ValueError) as error:  # InvalidValue is a ValueError
        raise CheckpointError(f"{path}: its recorded settings are not ones this version builds ({error}); export "
                              f"it again") from None


def read_settings(path) -> dict:
    """{"vae": ..., "process": ..., "sampler": ..., "latent_norm": ...} as recorded by save_pretrained (None where
    unknown; latent_norm a gen.vae.ChannelNorm); {} for official files."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = checkpoint_weights(path)
    if not path.endswith(".safetensors"):
        return {}
    info = read_export_info(path)
    vae = info["vae"]
    if vae is None and info[FORMAT_KEY].get("in_channels") == 3:
        vae = "none"  # no VAE recorded (exported from Python), RGB inputs: a pixel model, not an SD-VAE latent one
    return {"vae": vae, "process": info["process"], "sampler": info["sampler"], "latent_norm": info["latent_norm"]}


def build_from_config(config: dict):
    """The model a saved config describes (as written by save_pretrained; read_export_info has checked it)."""
    return build_model(ModelConfig.from_dict(config))


def _load_export(path):
    from safetensors.torch import load_file

    model = build_from_config(read_export_info(path)[FORMAT_KEY])
    try:
        state_dict = load_file(path)
    except Exception as error:
        raise CheckpointError(f"cannot read the tensors of {path} ({error}); it may be truncated: export it "
                              f"again") from None
    _load_strict(model, state_dict, path)
    return model


def checkpoint_weights(folder) -> str:
    """The EMA export of a training checkpoint folder; any other folder (a run's, say) is named with what to pass."""
    weights_path = os.path.join(folder, CHECKPOINT_WEIGHTS)
    if not os.path.isfile(weights_path):
        export = os.path.join(folder, "model.safetensors")
        hint = f"pass {export}, the run's export, or" if os.path.isfile(export) else "pass"
        raise CheckpointError(f"{folder} is not a training checkpoint folder (it has no {CHECKPOINT_WEIGHTS}); {hint} "
                              f"a checkpoint folder (RESULTS/ckpt/step-NNNNNNN) or an exported .safetensors")
    return weights_path


def _load_checkpoint_folder(folder):
    return _load_export(checkpoint_weights(folder))


def load_weights(model, path):
    """Put the weights of `path` into `model` (the same architecture, checked in one line): an export, a training
    checkpoint folder (its EMA) or an official DiT/SiT .pt. For starting a run from weights (--init-from)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = checkpoint_weights(path)
    try:
        state_dict = read_state_dict(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found; pass an export, a checkpoint folder or an official .pt") from None
    except Exception as error:  # a truncated file, or a pickle that is more than tensors
        raise CheckpointError(f"cannot read {path} ({torch_load_reason(error)}); it may be truncated or hold Python "
                              f"objects besides tensors") from None
    _load_strict(model, state_dict, path)
    return model


def official_name_and_size(path) -> tuple[str, int] | None:
    """("DiT-XL/2", 256) for an official file name like DiT-XL-2-256x256.pt; None otherwise."""
    match = OFFICIAL_FILE_NAME.match(os.path.basename(path))
    if match is None:
        return None
    family, size, patch, pixels = match.groups()
    return f"{family}-{size}/{patch}", int(pixels)


def _load_official(path, model_name, image_size, **model_options):
    inferred = official_name_and_size(path)
    model_name = model_name or (inferred and inferred[0])
    image_size = image_size or (inferred and inferred[1])
    if model_name is None or (image_size is None and "input_size" not in model_options):
        raise CheckpointError(f"{path} carries no model config; pass --model (e.g. DiT-XL/2) and --image-size, "
                              f"or keep the official file name (e.g. DiT-XL-2-256x256.pt)")
    if "input_size" not in model_options:
        model_options["input_size"] = image_size // VAE_DOWNSAMPLING
    model = create_model(model_name, **model_options)
    try:
        state_dict = read_state_dict(path)
    except Exception as error:  # a truncated zip archive, or a pickle that is more than tensors
        raise CheckpointError(f"cannot read {path} as a weights-only torch file ({torch_load_reason(error)}); it may "
                              f"be truncated (download it again) or hold Python objects besides tensors") from None
    try:
        return load_official_state_dict(model, state_dict)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def torch_load_reason(error) -> str:
    """The telling part of a torch.load error, in one line: a weights-only refusal spans a page of advice, and the
    words after "WeightsUnpickler error:" name the refused global or instruction."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())  # no terminal colours, one line
    found = re.search(r"WeightsUnpickler error: (.*?)(?: Please | Check the documentation|$)", text)
    if found:
        return f"refused by weights_only: {found.group(1).strip()}"
    return text.split(". ")[0][:200] or type(error).__name__


def _load_strict(model, state_dict, path):
    problem = describe_mismatch(model.state_dict(), state_dict)
    if problem:
        raise CheckpointError(f"{path} does not fit {model.name}: {problem}")
    damaged = [key for key, value in state_dict.items() if value.is_floating_point() and not value.isfinite().all()]
    if damaged:  # a NaN weight makes every image NaN, which samplers report far from here
        raise CheckpointError(f"{path} holds NaN or infinite weights ({', '.join(damaged[:3])}); it is damaged, or "
                              f"its run diverged: take an earlier checkpoint")
    model.load_state_dict(state_dict, strict=True)
