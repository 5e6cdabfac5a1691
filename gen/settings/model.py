"""Which network to train and how it runs; its architecture is the zoo's `ModelConfig` (gen/models/zoo.py)."""
import os
from dataclasses import dataclass
from typing import ClassVar

from common.errors import UserError

from ..models.vca import KERNELS
from ..models.zoo import model_config
from . import checks
from .fields import setting

LIGHTNING_OPTIONS = ("qk_norm", "rope", "swiglu", "rmsnorm")


@dataclass
class ModelSettings:
    title: ClassVar[str] = "model"

    model: str = setting("DiT-S/2-VCA", "e.g. DiT-S/2-VCA, SiT-XL/2, SiT-Mini/4-VCA")
    class_dropout_prob: float = setting(0.1, "label dropout for guidance")
    init_from: str | None = setting(None, "start from these weights with a fresh optimizer: an export, a checkpoint "
                                          "folder's EMA or an official DiT/SiT .pt (SiT's and fast-DiT's --ckpt)",
                                    metavar="FILE")
    gradient_checkpointing: bool = setting(False, "recompute blocks to save memory", switch=True)
    compile: bool = setting(False, "torch.compile the model", switch=True)
    vca_kernels: str = setting("auto", "VCA's fast path: fused Triton epilogues (triton), its core in one Triton "
                                       "kernel pair (triton-core; not yet measured on a GPU), torch ops (torch), or "
                                       "auto: triton on CUDA for head widths that are powers of 2 (measured faster "
                                       "there), torch elsewhere", choices=KERNELS)
    qk_norm: bool = setting(False, "LightningDiT's QK-norm: a per-head norm of queries and keys (against NaNs in long "
                                   "runs); with VCA before both stages", switch=True)
    rope: bool = setting(False, "LightningDiT's 2-D rotary position embedding of queries and keys (head width "
                                "divisible by 4); with VCA the pooled contrast tokens inherit it", switch=True)
    swiglu: bool = setting(False, "LightningDiT's SwiGLU MLP (2/3 the hidden width) instead of DiT's GELU MLP",
                           switch=True)
    rmsnorm: bool = setting(False, "LightningDiT's RMSNorm (with a gain) instead of DiT's LayerNorm in the blocks, "
                                   "the final layer and QK-norm", switch=True)

    def lightning_options(self) -> dict:
        """The block options as ModelConfig takes them (gen/models/lightning.py)."""
        return {name: getattr(self, name) for name in LIGHTNING_OPTIONS}

    def validate(self):
        try:  # an unknown name, or block options its heads cannot take, fail here in one line
            model_config(self.model, **self.lightning_options()).check()
        except ValueError as error:
            raise UserError(f"--model {self.model}: {error}") from None
        checks.within(self, "class_dropout_prob", 0.0, 1.0, high_open=True)
        if self.init_from is not None and not os.path.exists(self.init_from):
            raise UserError(f"--init-from {self.init_from} not found; pass an export (.safetensors), a checkpoint "
                            f"folder or an official DiT/SiT .pt")
