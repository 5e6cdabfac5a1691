"""What the loss draws and adds beyond the papers' defaults: the time sampling of REPA and LightningDiT
(--weighting lognormal), LightningDiT's velocity-direction term (--cos-loss) and REPA's representation alignment
(--enc-type, --encoder-depth, --proj-coeff, --projector-dim)."""
from dataclasses import dataclass
from typing import ClassVar

from ..encoders import check_enc_type
from . import checks
from .fields import setting


@dataclass
class ObjectiveSettings:
    title: ClassVar[str] = "objective"

    weighting: str = setting("uniform", "the training times: uniform (DiT, SiT), or lognormal: t = sigmoid(n), n ~ "
                                        "N(0, 1), more steps at mid noise (REPA's and LightningDiT's)",
                             choices=("uniform", "lognormal"))
    cos_loss: bool = setting(False, "add LightningDiT's 1 - cos(predicted, true velocity) over the channels to the "
                                    "loss (SiT, velocity prediction)", switch=True)

    enc_type: str | None = setting(None, "REPA: align the hidden states with this frozen encoder's patch features: "
                                         "dinov2-vit-s|b|l|g (timm), a folder of a timm model, or digits (the "
                                         "built-in digits' own, trained here without labels); default: off")
    encoder_depth: int = setting(8, "REPA: the block (1-based) whose output is aligned (REPA: 8 of SiT-XL's 28)")
    proj_coeff: float = setting(0.5, "REPA: the alignment loss's weight")
    projector_dim: int = setting(2048, "REPA: the width of the projector MLP from hidden states to features")

    def validate(self):  # the family's training settings check what needs the process (cos_loss: SiT's velocity)
        checks.at_least(self, 1, "encoder_depth", "projector_dim")
        checks.at_least(self, 0.0, "proj_coeff")
        if self.enc_type is not None:
            check_enc_type(self.enc_type)
