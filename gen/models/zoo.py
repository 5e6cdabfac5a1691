"""Model names -> configurations: `DiT-{S,B,L,XL}/{2,4,8}`, `SiT-...`, each also with the suffix `-VCA`.

`Mini` is the small configuration for CPU work (4 blocks, 128 wide, 4 heads): about 1.3 M parameters,
some 700 images/s of training on 16 tokens on a 2-core machine. Not a paper model.
"""
import re

from ..errors import InvalidValue
from .dit import DiT, SiT

SIZES = {
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "Mini": dict(depth=4, hidden_size=128, num_heads=4),
}
PATCH_SIZES = (2, 4, 8)
FAMILIES = {"DiT": DiT, "SiT": SiT}

# What create_model accepts besides the name; the defaults are ImageNet 256 (32x32 latents, 1000 classes).
DEFAULTS = dict(
    input_size=32, in_channels=4, num_classes=1000, learn_sigma=True, mlp_ratio=4.0, class_dropout_prob=0.1,
    cfg_channels=3, vca_pool_size=None, vca_stage2_softmax="joint", vca_local_term=True,
    vca_contrast_tokens="pool", vca_shared_pos_embed=False,
)
ARCHITECTURE_FIELDS = ("patch_size", "hidden_size", "depth", "num_heads")

NAME_PATTERN = re.compile(r"^(DiT|SiT)-(XL|L|B|S|Mini)/(\d+)(-VCA)?$")


def list_models() -> list[str]:
    return [f"{family}-{size}/{patch}{suffix}" for family in FAMILIES for size in SIZES
            for patch in PATCH_SIZES for suffix in ("", "-VCA")]


def model_config(name: str, **overrides) -> dict:
    """The full keyword configuration of model `name`, with `overrides` applied."""
    match = NAME_PATTERN.match(name)
    if match is None or int(match.group(3)) not in PATCH_SIZES:
        raise InvalidValue(f"unknown model {name!r}; expected e.g. DiT-XL/2, SiT-S/2-VCA "
                           f"(see gen.models.list_models())")
    family, size, patch, vca = match.groups()
    unknown = sorted(set(overrides) - set(DEFAULTS) - set(ARCHITECTURE_FIELDS))
    if unknown:
        raise InvalidValue(f"unknown model option(s) {unknown}; allowed: "
                         f"{sorted(set(DEFAULTS) | set(ARCHITECTURE_FIELDS))}")
    config = dict(DEFAULTS, **SIZES[size], patch_size=int(patch), attention="vca" if vca else "mhsa")
    config.update(overrides)
    return {"family": family, **config}


def create_model(name: str, **overrides):
    """Build `name` (e.g. "DiT-S/2-VCA") with DiT's initialisation; `model.config` records how."""
    config = model_config(name, **overrides)
    model = FAMILIES[config["family"]](**{k: v for k, v in config.items() if k != "family"})
    model.name = name
    model.config = config
    return model
