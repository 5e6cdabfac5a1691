"""The configuration a network owns (nanoGPT's habit): plain values in a dataclass, saved with the weights so
that a file rebuilds its model. A dataclass rather than diffusers' ConfigMixin: the model stays a plain
nn.Module with no registration machinery, and `asdict` is all that serialisation needs.
"""
from dataclasses import asdict, dataclass, fields

from ..settings.checks import MAX_CLASSES

FAMILY_NAMES = ("DiT", "SiT")
MAX_PARAMETERS = 10**10  # 15x DiT-XL/2 (0.68 B): a larger config is a damaged or hostile file, not a model
MAX_TOKENS = 256 * 256  # DiT-XL/2 at 512 px has 1,024 tokens
# Every field's type and range, checked before a saved config builds anything (gen.weights reads files from anywhere)
CHOICES = {"family": FAMILY_NAMES, "attention": ("mhsa", "vca"), "vca_stage2_softmax": ("joint", "separate"),
           "vca_contrast_tokens": ("pool", "learned")}
BOOLEAN_FIELDS = ("learn_sigma", "vca_local_term", "vca_shared_pos_embed", "qk_norm", "rope", "swiglu", "rmsnorm")
INTEGER_RANGES = {"input_size": (1, 4096), "patch_size": (1, 64), "in_channels": (1, 64), "hidden_size": (1, 65536),
                  "depth": (1, 1024), "num_heads": (1, 1024), "num_classes": (1, MAX_CLASSES),
                  "cfg_channels": (1, 64), "vca_pool_size": (1, 256), "repa_depth": (1, 1024), "repa_dim": (1, 65536),
                  "repa_projector_dim": (1, 65536)}
OPTIONAL_INTEGERS = ("cfg_channels", "vca_pool_size", "repa_depth", "repa_dim")

SIZES = {
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "Mini": dict(depth=4, hidden_size=128, num_heads=4),
}


@dataclass
class ModelConfig:
    """What DiT(config) / SiT(config) build, the family included. Defaults: DiT-XL/2 at ImageNet 256."""

    family: str = "DiT"
    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    attention: str = "mhsa"
    cfg_channels: int | None = 3
    vca_pool_size: int | None = None
    vca_stage2_softmax: str = "joint"
    vca_local_term: bool = True
    vca_contrast_tokens: str = "pool"
    vca_shared_pos_embed: bool = False
    qk_norm: bool = False  # LightningDiT's block options (gen/models/lightning.py); off: DiT's and SiT's blocks
    rope: bool = False
    swiglu: bool = False
    rmsnorm: bool = False
    repa_depth: int | None = None  # REPA: project the hidden states after this block (1-based); None: no projector
    repa_dim: int | None = None  # the frozen encoder's feature width that the projector maps to
    repa_projector_dim: int = 2048  # REPA's projector width

    @property
    def name(self) -> str:
        """The zoo name (DiT-S/2-VCA) when the architecture is a zoo size, else e.g. DiT-custom/2."""
        architecture = dict(depth=self.depth, hidden_size=self.hidden_size, num_heads=self.num_heads)
        size = next((name for name, values in SIZES.items() if values == architecture), "custom")
        return f"{self.family}-{size}/{self.patch_size}" + ("-VCA" if self.attention == "vca" else "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """A saved config, every field checked (ValueError naming the first wrong one) before anything is built."""
        if not isinstance(values, dict):
            raise ValueError(f"the model config is a {type(values).__name__}, not a mapping")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        config = cls(**values)
        config.check()
        return config

    def check(self):
        """Types and ranges of every field, the shapes that must divide, and the size: ValueError otherwise."""
        for name, value in asdict(self).items():
            if name in CHOICES and value not in CHOICES[name]:
                raise ValueError(f"{name} = {value!r} is not one of {list(CHOICES[name])}")
            if name in INTEGER_RANGES and not (value is None and name in OPTIONAL_INTEGERS):
                low, high = INTEGER_RANGES[name]
                if not (type(value) is int and low <= value <= high):
                    raise ValueError(f"{name} = {value!r} is not an integer in [{low}, {high}]")
            if name in BOOLEAN_FIELDS and type(value) is not bool:
                raise ValueError(f"{name} = {value!r} is not true or false")
        if not (isinstance(self.mlp_ratio, (int, float)) and 0 < self.mlp_ratio <= 64):
            raise ValueError(f"mlp_ratio = {self.mlp_ratio!r} is not a number in (0, 64]")
        if not (isinstance(self.class_dropout_prob, (int, float)) and 0 <= self.class_dropout_prob <= 1):
            raise ValueError(f"class_dropout_prob = {self.class_dropout_prob!r} is not a number in [0, 1]")
        if self.input_size % self.patch_size or self.hidden_size % self.num_heads:
            raise ValueError(f"patch_size {self.patch_size} must divide input_size {self.input_size} and num_heads "
                             f"{self.num_heads} hidden_size {self.hidden_size}")
        if self.rope and (self.hidden_size // self.num_heads) % 4:
            raise ValueError(f"rope needs a head width divisible by 4; {self.hidden_size} / {self.num_heads} heads "
                             f"is {self.hidden_size // self.num_heads}")
        if (self.repa_depth is None) != (self.repa_dim is None) or (self.repa_depth or 0) > self.depth:
            raise ValueError(f"repa_depth {self.repa_depth} and repa_dim {self.repa_dim} go together, and the depth "
                             f"must be a block of the {self.depth}")
        if (self.input_size // self.patch_size) ** 2 > MAX_TOKENS:
            raise ValueError(f"{(self.input_size // self.patch_size) ** 2:,} tokens exceed {MAX_TOKENS:,}")
        if self.estimated_parameters() > MAX_PARAMETERS:
            raise ValueError(f"about {self.estimated_parameters():.2g} parameters, more than {MAX_PARAMETERS:.0e}")

    def lightning_blocks(self) -> list[str]:
        """The LightningDiT block options that are on (none: DiT's and SiT's blocks as published)."""
        return [name for name in ("qk_norm", "rope", "swiglu", "rmsnorm") if getattr(self, name)]

    def recipe_options(self) -> list[str]:
        """Every option beyond DiT's and SiT's networks that is on: the LightningDiT blocks and REPA's projector."""
        return self.lightning_blocks() + (["repa projector"] if self.repa_depth is not None else [])

    def estimated_parameters(self) -> float:
        """Blocks' attention (4 h^2), MLP (2 r h^2) and adaLN (6 h^2), the class table and the embedders."""
        h, patch_pixels = self.hidden_size, self.patch_size**2 * self.in_channels
        per_block = (4 + 2 * self.mlp_ratio + 6) * h * h
        projector = (h + self.repa_projector_dim + self.repa_dim) * self.repa_projector_dim if self.repa_dim else 0
        return self.depth * per_block + (self.num_classes + 1) * h + 2 * patch_pixels * h + 2 * h * h + projector
