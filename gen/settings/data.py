"""What the network learns from: an image folder, a latent folder or the built-in digits, and how it is read."""
import os
from dataclasses import dataclass
from typing import ClassVar

from common.digits import DIGITS_IMAGE_SIZE
from common.errors import UserError

from . import checks
from .fields import setting

DEFAULT_IMAGE_SIZE = 256  # DiT's and SiT's ImageNet size
DEFAULT_WORKERS = 4
MAX_IMAGE_SIZE = 8192  # 8x DiT's largest; the model's token count is checked again when it is built
MAX_DIGITS_IMAGE_SIZE = 512  # the 1,797 digits are held in memory enlarged: 1.4 GB at 512 px, 90 GB at 4,096


def available_cpus() -> int:
    """The CPUs this process may run on (what torch's DataLoader compares its workers with)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class DataSettings:
    title: ClassVar[str] = "data"

    data_path: str | None = setting(None, "ImageFolder (ImageNet's train layout: root/<class>/<image>); without it "
                                          "and without --latents, the built-in scikit-learn digits")
    latents: str | None = setting(None, "a folder made by extract_latents.py; replaces --data-path")
    image_size: int | None = setting(None, f"pixels (default: {DIGITS_IMAGE_SIZE} for the built-in digits, else "
                                           f"{DEFAULT_IMAGE_SIZE})")
    num_classes: int = setting(1000)
    vae: str = setting("ema", "ema | mse | a local AutoencoderKL folder | none (pixel space)")
    latent_norm: str = setting("scalar", "the network's input space: the latents times 0.18215 (scalar: DiT's, SiT's), "
                                         "or normalised per channel by the training data's mean and deviation "
                                         "(channel: LightningDiT's; recorded with the weights)",
                               choices=("scalar", "channel"))
    random_flip: bool = setting(True, "horizontal flips (DiT's augmentation); off for data that mirroring changes, "
                                      "e.g. digits")
    strict: bool = setting(False, "stop at an unreadable image instead of skipping it", switch=True)
    num_workers: int | None = setting(None, f"data loading processes, at most the CPU count (default: 0 for the "
                                            f"built-in digits, which are in memory, else {DEFAULT_WORKERS})")

    @property
    def digits(self) -> bool:
        """No folder given: the built-in digits."""
        return self.data_path is None and self.latents is None

    def fill_defaults(self) -> list[str]:
        """--image-size and --num-workers left unset take the data's defaults; more workers than CPUs are capped
        (torch warns about them, and they only wait for each other). Returns what to tell the user."""
        if self.image_size is None:
            self.image_size = DIGITS_IMAGE_SIZE if self.digits else DEFAULT_IMAGE_SIZE
        cpus = available_cpus()
        if self.num_workers is None:
            self.num_workers = 0 if self.digits else min(DEFAULT_WORKERS, cpus)
        elif self.num_workers > cpus:
            note = f"--num-workers {self.num_workers} capped at the {cpus} CPUs this process may use"
            self.num_workers = cpus
            return [note]
        return []

    def validate(self):
        checks.at_least(self, 1, "num_classes", "image_size")
        checks.within(self, "image_size", 1, MAX_DIGITS_IMAGE_SIZE if self.digits else MAX_IMAGE_SIZE)
        checks.at_least(self, 0, "num_workers")
        checks.class_count(self)
        if self.latent_norm == "channel" and self.vae == "none":
            raise UserError("--latent-norm channel normalises VAE latents; pixels (--vae none) are in [-1, 1] "
                            "already: drop --latent-norm or train on latents")
        for name in ("data_path", "latents"):
            path = getattr(self, name)
            if path is not None and not os.path.isdir(path):
                raise UserError(f"{checks.flag(name)} {path} is not a folder; check the path")
