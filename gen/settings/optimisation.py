"""How long and how the weights are trained: the batch, the optimiser, its schedule and the EMA."""
from dataclasses import dataclass
from typing import ClassVar

from common.errors import UserError

from . import checks
from .fields import setting


@dataclass
class OptimisationSettings:
    title: ClassVar[str] = "optimisation"

    global_batch_size: int = setting(256, "split evenly over the processes")
    grad_accum_steps: int = setting(1, "split each process's batch into this many micro-batches (same step, less "
                                       "memory)")
    epochs: int | None = setting(None, "stop after this many epochs (and/or --max-steps)")
    max_steps: int | None = setting(None, "stop after this many optimiser steps")
    lr: float = setting(1e-4)
    warmup_steps: int = setting(0, "raise the learning rate linearly to --lr over this many steps (0: none, as DiT)")
    weight_decay: float = setting(0.0)
    adam_beta2: float = setting(0.999, "AdamW's second-moment decay (LightningDiT: 0.95)")
    ema_decay: float = setting(0.9999)
    max_grad_norm: float | None = setting(None, "clip the gradient norm (off by default)")
    mixed_precision: str | None = setting(None, "autocast precision (default: what `accelerate launch` was given, "
                                                "else no)", choices=("no", "fp16", "bf16"))
    global_seed: int = setting(0)

    def validate(self):
        if self.epochs is None and self.max_steps is None:
            raise UserError("give --epochs and/or --max-steps (the paper settings: --max-steps 400000)")
        checks.at_least(self, 1, "epochs", "max_steps", "global_batch_size", "grad_accum_steps")
        checks.at_least(self, 0, "warmup_steps")
        checks.seed(self, "global_seed")
        checks.positive(self, "lr", "max_grad_norm")
        checks.at_least(self, 0.0, "weight_decay")
        checks.within(self, "ema_decay", 0.0, 1.0)
        checks.within(self, "adam_beta2", 0.0, 1.0, high_open=True)
