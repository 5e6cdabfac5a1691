"""Quality measured during training (gen/training/evaluation.py): how often, how many images, against what."""
import os
from dataclasses import dataclass
from typing import ClassVar

from common.errors import UserError

from . import checks
from .fields import setting


@dataclass
class EvaluationSettings:
    title: ClassVar[str] = "evaluation during training"

    eval_every: int = setting(0, "score the EMA model every N steps (0: never)")
    eval_samples: int = setting(1000, "images per evaluation, balanced classes")
    eval_ref: str | None = setting(None, "reference batch (ADM layout); default for the built-in digits: the real "
                                         "digits", metavar="REF.npz")
    eval_features: str = setting("auto", "feature network (auto: digits for the built-in digits, else inception)",
                                 choices=("auto", "inception", "digits"))
    eval_batch_size: int = setting(250, "images per sampling batch")

    def validate(self):
        checks.at_least(self, 0, "eval_every")
        checks.at_least(self, 4, "eval_samples")  # precision/recall compare 3 nearest neighbours
        checks.at_least(self, 1, "eval_batch_size")
        if self.eval_every and self.eval_ref is not None and not os.path.isfile(self.eval_ref):  # unused: unread
            raise UserError(f"--eval-ref {self.eval_ref} not found; pass an ADM-layout .npz")
