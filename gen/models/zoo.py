"""Model names -> configurations: `DiT-{S,B,L,XL}/{2,4,8}`, `SiT-...`, each also with the suffix `-VCA`.

`Mini` is the small configuration for CPU work (4 blocks, 128 wide, 4 heads): about 1.3 M parameters,
some 700 images/s of training on 16 tokens on a 2-core machine. Not a paper model.
"""
import re
from dataclasses import fields

from common.cli import close_names
from common.errors import InvalidValue

from .config import FAMILY_NAMES, SIZES, ModelConfig
from .dit import DiT, SiT

PATCH_SIZES = (2, 4, 8)
NETWORKS = {network.family: network for network in (DiT, SiT)}  # each network class says its family

ARCHITECTURE_FIELDS = ("patch_size", "hidden_size", "depth", "num_heads")
# What create_model accepts besides the name, with ModelConfig's defaults (ImageNet 256: 32x32 latents).
DEFAULTS = {field.name: field.default for field in fields(ModelConfig)
            if field.name not in ("family", "attention", *ARCHITECTURE_FIELDS)}

NAME_PATTERN = re.compile(rf"^({'|'.join(FAMILY_NAMES)})-({'|'.join(SIZES)})/(\d+)(-VCA)?$")


def list_models() -> list[str]:
    return [f"{family}-{size}/{patch}{suffix}" for family in FAMILY_NAMES for size in SIZES
            for patch in PATCH_SIZES for suffix in ("", "-VCA")]


def close_model_names(name) -> str:
    """'did you mean X? ' for a near miss of a model name, else ''."""
    by_lower = {model.lower(): model for model in list_models()}
    lowered = str(name).lower()
    matches = [lowered] if lowered in by_lower else close_names(lowered, by_lower)  # only the case wrong: that one
    close = [by_lower[match] for match in matches]
    return f"did you mean {' or '.join(close)}? " if close else ""


def model_config(name: str, **overrides) -> ModelConfig:
    """The full configuration of model `name`, with `overrides` applied."""
    match = NAME_PATTERN.match(name)
    if match is None or int(match.group(3)) not in PATCH_SIZES:
        raise InvalidValue(f"unknown model {name!r}; {close_model_names(name)}the names are FAMILY-SIZE/PATCH[-VCA]: "
                           f"family {' or '.join(FAMILY_NAMES)}, size {', '.join(SIZES)}, patch "
                           f"{', '.join(map(str, PATCH_SIZES))} (e.g. DiT-XL/2, SiT-S/2-VCA)")
    family, size, patch, vca = match.groups()
    unknown = sorted(set(overrides) - set(DEFAULTS) - set(ARCHITECTURE_FIELDS))
    if unknown:
        raise InvalidValue(f"unknown model option(s) {unknown}; allowed: "
                           f"{sorted(set(DEFAULTS) | set(ARCHITECTURE_FIELDS))}")
    values = dict(DEFAULTS, **SIZES[size], patch_size=int(patch), attention="vca" if vca else "mhsa")
    values.update(overrides)
    return ModelConfig(family=family, **values)


def build_model(config: ModelConfig):
    """The network a config describes, with DiT's initialisation."""
    return NETWORKS[config.family](config)


def create_model(name: str, **overrides):
    """Build `name` (e.g. "DiT-S/2-VCA") with DiT's initialisation; `model.config` records how."""
    return build_model(model_config(name, **overrides))
