"""sample.py's own options (the weights file, the grid, the N samples of an FID run), beside the sampler's and the
process's flags that it shares with training; each concern checks its own values."""
import os
from dataclasses import dataclass
from typing import ClassVar

from common.errors import MissingInput

from ..sampling.seeding import CLASS_ORDERS
from . import checks
from .fields import setting

DIT_GRID_LABELS = [207, 360, 387, 974, 88, 979, 417, 279]  # DiT's sample.py classes, for ImageNet models
WEIGHTS_KINDS = "an exported .safetensors, a training checkpoint folder or an official DiT/SiT .pt"


@dataclass
class WeightsSettings:
    """The weights to sample and what sample.py may not learn from them."""
    title: ClassVar[str] = "model"

    ckpt: str = setting(None, "exported .safetensors, training checkpoint folder or official DiT/SiT .pt",
                        required=True)
    model: str | None = setting(None, "e.g. DiT-XL/2; read from the checkpoint when it says, else from an official "
                                      "file name")
    image_size: int | None = setting(None, "pixels (default: what the model makes)")
    num_classes: int | None = setting(None, "default: the checkpoint's (1000)")
    compile: bool = setting(False, "torch.compile the network once for the sampling shape: about 20 s, then network "
                                   "steps 2.3x faster on an H200; pays from about 3,000 images per process",
                            switch=True)
    guide_ckpt: str | None = setting(None, "autoguidance: guide with this smaller or earlier model of the same data "
                                           "instead of the null class (guide + cfg_scale x (model - guide); Karras "
                                           "et al. 2024)", metavar="FILE")
    seed: int = setting(0, aliases=("--global-seed",))

    def validate(self):
        checks.at_least(self, 1, "image_size", "num_classes")
        checks.class_count(self)
        checks.seed(self, "seed")
        for name in ("ckpt", "guide_ckpt"):
            path = getattr(self, name)
            if path is not None and not os.path.exists(path):
                raise MissingInput(f"{checks.flag(name)} {path} not found; pass {WEIGHTS_KINDS}")


@dataclass
class GridSettings:
    """Grid mode: one PNG of a few images per class, as DiT's and SiT's sample.py."""
    title: ClassVar[str] = "grid mode (without --num-fid-samples)"

    class_labels: list[int] | None = setting(None, f"default: {DIT_GRID_LABELS} for ImageNet models, else the "
                                                   f"model's classes")
    nrow: int = setting(4, "images per row")
    output: str = setting("sample.png")
    label_rows: bool = setting(False, "write each row's class ids at its left", switch=True)

    def validate(self):
        checks.at_least(self, 1, "nrow")


@dataclass
class ManySamplesSettings:
    """N-sample mode: the images and samples.npz of an FID run, as DiT's sample_ddp.py."""
    title: ClassVar[str] = "N-sample mode"

    num_fid_samples: int | None = setting(None)
    per_proc_batch_size: int = setting(32)
    sample_dir: str = setting("samples")
    class_order: str = setting("random", "random: uniform classes as DiT's sample_ddp.py; balanced: image i has "
                                         "class i mod N", choices=CLASS_ORDERS)

    def validate(self):
        checks.at_least(self, 1, "num_fid_samples", "per_proc_batch_size")
