"""What the loss draws and adds beyond the papers' defaults: the time sampling of REPA and LightningDiT
(--weighting lognormal) and LightningDiT's velocity-direction term (--cos-loss)."""
from dataclasses import dataclass
from typing import ClassVar

from .fields import setting


@dataclass
class ObjectiveSettings:
    title: ClassVar[str] = "objective"

    weighting: str = setting("uniform", "the training times: uniform (DiT, SiT), or lognormal: t = sigmoid(n), n ~ "
                                        "N(0, 1), more steps at mid noise (REPA's and LightningDiT's)",
                             choices=("uniform", "lognormal"))
    cos_loss: bool = setting(False, "add LightningDiT's 1 - cos(predicted, true velocity) over the channels to the "
                                    "loss (SiT, velocity prediction)", switch=True)

    def validate(self):
        pass  # the family's training settings check what needs the process (cos_loss: SiT's velocity)
