"""The learning rate of each optimiser step: --lr after a linear warm-up of --warmup-steps (0: none, DiT's
habit). A pure function of the step, so a resumed run continues it with no scheduler state to save."""


def learning_rate(step: int, lr: float, warmup_steps: int = 0) -> float:
    """The rate of optimiser step `step` (0-based): (step + 1) / warmup_steps of `lr` during the warm-up."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)


def set_learning_rate(optimizer, rate: float):
    for group in optimizer.param_groups:
        group["lr"] = rate
