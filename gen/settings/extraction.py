"""extract_latents.py's options: the images, the VAE and how the latent folder is written."""
import os
from dataclasses import dataclass
from typing import ClassVar

from ..data.latents import DTYPES, LatentSetError
from ..encoders import check_enc_type
from . import checks
from .data import DEFAULT_IMAGE_SIZE, DEFAULT_WORKERS
from .fields import setting


@dataclass
class ExtractionSettings:
    title: ClassVar[str] = ""  # extract_latents.py's flags are not grouped

    data_path: str | None = setting(None, "ImageFolder (root/<class>/<image>); without it, the built-in "
                                          "scikit-learn digits")
    output: str = setting(None, "the latent folder (created, or completed when resumed)", required=True)
    image_size: int = setting(DEFAULT_IMAGE_SIZE)
    vae: str = setting("ema", "ema | mse | a local AutoencoderKL folder")
    dtype: str = setting("float16", "how latents are stored", choices=tuple(sorted(DTYPES)))
    shard_size: int = setting(10_000, "images per shard (the unit of resumption)")
    batch_size: int = setting(64, "images per VAE batch (per process)")
    num_workers: int = setting(DEFAULT_WORKERS)
    strict: bool = setting(False, "stop at an unreadable image instead of skipping it", switch=True)
    global_seed: int = setting(0, "seeds the posterior samples")
    enc_type: str | None = setting(None, "also store REPA's features of this encoder (train.py's --enc-type "
                                         "values): large, see above")
    enc_grid: int | None = setting(None, "the token grid the features are made for: the trained model's (default: "
                                         "the latent side / 2, patch size 2)")

    def validate(self):
        if self.vae == "none":
            raise LatentSetError("--vae none trains on pixels directly; there is nothing to extract")
        checks.at_least(self, 1, "image_size", "shard_size", "batch_size", "enc_grid")
        if self.enc_type is not None:
            check_enc_type(self.enc_type)
        checks.at_least(self, 0, "num_workers")
        if self.data_path is not None and not os.path.isdir(self.data_path):
            raise LatentSetError(f"--data-path {self.data_path} is not a folder; check the path")
        checks.writable_folder(self.output, "--output")
