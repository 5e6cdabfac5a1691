"""The configuration a network owns (nanoGPT's habit): plain values in a dataclass, saved with the weights so
that a file rebuilds its model. A dataclass rather than diffusers' ConfigMixin: the model stays a plain
nn.Module with no registration machinery, and `asdict` is all that serialisation needs.
"""
from dataclasses import asdict, dataclass, fields

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
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**values)
