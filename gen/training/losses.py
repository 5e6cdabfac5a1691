"""The per-sample losses that the training loop minimises, as small callables it does not need to know:
`loss_fn(model, x, y) -> [B]` (EDM's habit). train_dit.py, train_sit.py and benchmarks/train_step.py use them."""
import torch


class DiffusionLoss:
    """DiT: ADM's loss (MSE + VB with learned sigma) at a uniformly drawn timestep of `diffusion`."""

    def __init__(self, diffusion):
        self.diffusion = diffusion

    def __call__(self, model, x, y):
        t = torch.randint(0, self.diffusion.num_timesteps, (x.shape[0],), device=x.device)
        return self.diffusion.training_losses(model, x, t, dict(y=y))["loss"]


class TransportLoss:
    """SiT: the interpolant loss of `transport` (its path, prediction and loss weight)."""

    def __init__(self, transport):
        self.transport = transport

    def __call__(self, model, x, y):
        return self.transport.training_losses(model, x, dict(y=y))["loss"]
