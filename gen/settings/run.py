"""Where a training run writes and what it keeps: its folder, logs, trackers, checkpoints, grids and final
samples."""
import importlib.util
import os
from dataclasses import dataclass
from typing import ClassVar

from common.errors import UserError

from . import checks
from .fields import setting

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet_ml", "aim": "aim",
                    "mlflow": "mlflow", "clearml": "clearml", "dvclive": "dvclive"}


def check_tracker(log_with: str):
    """An Accelerate tracker that is not installed fails now, not after the first steps."""
    if log_with in ("auto", "none"):
        return
    if log_with not in TRACKER_PACKAGES:
        raise UserError(f"--log-with {log_with}: unknown tracker; use auto, none or one of {sorted(TRACKER_PACKAGES)}")
    if importlib.util.find_spec(TRACKER_PACKAGES[log_with]) is None:
        raise UserError(f"--log-with {log_with}: the {TRACKER_PACKAGES[log_with]} package is not installed; "
                        f"pip install {TRACKER_PACKAGES[log_with]}, or use --log-with tensorboard or none")


@dataclass
class RunSettings:
    title: ClassVar[str] = "logging, checkpoints, samples"

    results_dir: str | None = setting(None, "the run's folder (default: results/<model>)")
    resume: str | None = setting(None, "'latest' (in --results-dir) or a checkpoint folder")
    log_every: int = setting(100)
    ckpt_every: int = setting(50_000)
    checkpoints_total_limit: int | None = setting(None, "keep the newest K checkpoints (older ones go once a newer "
                                                        "one verifies)", metavar="K")
    progress_bar: bool | None = setting(None, "a tqdm bar of the steps (default: when stderr is a terminal)")
    log_with: str = setting("auto", "Accelerate tracker: auto (tensorboard when installed), none, tensorboard, "
                                    "wandb, ...")
    sample_every: int = setting(10_000, "EMA sample grid every N steps (0: never)")
    grid_classes: list[int] | None = setting(None, "a grid row per class (default: all classes up to 10, else 8 "
                                                   "spread over them)")
    grid_columns: int = setting(8)
    final_samples: int = setting(0, "after training, this many EMA samples (balanced over classes) into samples.npz")

    def validate(self):
        checks.at_least(self, 1, "log_every", "ckpt_every", "grid_columns", "checkpoints_total_limit")
        checks.at_least(self, 0, "sample_every", "final_samples")
        check_tracker(self.log_with)
        if self.resume is not None and self.resume != "latest" and not os.path.isdir(self.resume):
            raise UserError(f"--resume {self.resume} is not a folder; pass 'latest' or a checkpoint folder "
                            f"such as RESULTS/ckpt/step-0001000")
