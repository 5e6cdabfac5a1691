"""What a run has spent on training, for FID against time and compute as well as steps: wall-clock seconds of
the optimisation steps (data loading included; evaluations, grids and checkpoints not) and model FLOPs
(3 x forward FLOPs per image x images: forward plus a backward of twice its cost). Both go on every log row
and into the checkpoint's training state, so a resumed run continues them."""
import time

import torch

BACKWARD_FACTOR = 3  # forward + backward (twice the forward): the convention of MFU and of the scaling-law papers
KEYS = ("train_seconds", "train_flops")


class TrainingBudget:
    """A stopwatch that runs only while steps run, and a FLOP counter advanced per step."""

    def __init__(self, device: torch.device, forward_flops_per_image: int | None, *, seconds: float = 0.0,
                 flops: int | None = 0):
        self.device, self.forward_flops_per_image = device, forward_flops_per_image
        self.seconds = float(seconds)
        self.flops = flops if forward_flops_per_image is not None else None  # unknown once the counter failed
        self.started = None

    def start(self):
        self.started = time.perf_counter()

    def stop(self):
        """Add the time since start(); on a GPU after the queued kernels finish, so their time is counted here."""
        if self.started is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - self.started
        self.started = None

    def add_step(self, images: int):
        if self.flops is not None:
            self.flops += BACKWARD_FACTOR * self.forward_flops_per_image * images

    def record(self) -> dict:
        """The cumulative values for a log row or the checkpoint (call while stopped)."""
        return {"train_seconds": round(self.seconds, 4), "train_flops": self.flops}
