"""Load weights in the official DiT/SiT format (facebookresearch/DiT, willisma/SiT) into our networks."""
import os
import warnings

import torch

# Prefixes that wrappers add to every key: DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(state_dict_or_path) -> dict:
    """A state dict from a dict or a file (.pt read without executing code, or .safetensors)."""
    if not isinstance(state_dict_or_path, (str, os.PathLike)):
        state_dict = state_dict_or_path
    else:
        path = os.fspath(state_dict_or_path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint {path} not found; pass the path of an official .pt or a .safetensors")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            with warnings.catch_warnings():  # torch warns about pickle protocols before it refuses a file
                warnings.simplefilter("ignore", UserWarning)
                state_dict = torch.load(path, map_location="cpu", weights_only=True)
    # Training checkpoints of DiT/SiT hold {"model", "ema", "opt", "args"}; sampling uses the EMA weights.
    for key in ("ema", "model", "state_dict"):
        if isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    return {_strip_wrappers(k): v for k, v in state_dict.items()}


def _strip_wrappers(key: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def describe_mismatch(model_state: dict, checkpoint_state: dict) -> str | None:
    """One line naming the first differing keys and shapes, or None when the two fit."""
    missing = [k for k in model_state if k not in checkpoint_state]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    wrong_shape = [
        f"{k} {list(checkpoint_state[k].shape)} in the checkpoint vs {list(model_state[k].shape)} in the model"
        for k in model_state if k in checkpoint_state and checkpoint_state[k].shape != model_state[k].shape
    ]
    if not (missing or unexpected or wrong_shape):
        return None
    parts = []
    if missing:
        parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    if wrong_shape:
        parts.append(f"shape {wrong_shape[0]}{' ...' if len(wrong_shape) > 1 else ''}")
    hints = []
    if any(".attn." in k for k in missing + unexpected):
        hints.append("attention kind (mhsa vs -VCA)")
    if any(k.startswith("pos_embed") for k in wrong_shape):
        hints.append("image size (--image-size) or patch size")
    if any(k.startswith("y_embedder") for k in wrong_shape):
        hints.append("number of classes")
    hint = f"; check the {', '.join(hints)}" if hints else "; check the model name and options"
    return "; ".join(parts) + hint


def load_official_state_dict(model, state_dict_or_path):
    """Load official-format DiT/SiT weights (state dict, or a checkpoint with "ema"/"model") into `model`."""
    checkpoint_state = read_state_dict(state_dict_or_path)
    problem = describe_mismatch(model.state_dict(), checkpoint_state)
    if problem:
        name = getattr(model, "name", type(model).__name__)
        raise ValueError(f"checkpoint does not fit {name}: {problem}")
    model.load_state_dict(checkpoint_state, strict=True)
    return model
