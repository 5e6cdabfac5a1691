"""The per-sample losses that the training loop minimises, as small callables it does not need to know:
`loss_fn(model, x, y) -> [B]` (EDM's habit). train_dit.py, train_sit.py and benchmarks/train_step.py use them.

`weighting` draws the training times: "uniform" as DiT and SiT do, or "lognormal", REPA's and LightningDiT's
logit-normal u = sigmoid(n), n ~ N(0, 1), which spends more steps at mid noise (tests/test_recipe.py holds it to
both anchors' code)."""
import torch
import torch.nn.functional as F


def logit_normal(normals: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """sigmoid(normals) scaled into [low, high]: LightningDiT's sample_logit_normal, given its normals."""
    return torch.sigmoid(normals) * (high - low) + low


def velocity_direction_loss(predicted, target):
    """LightningDiT's cosine term: 1 - cos(predicted, target) over the channels, averaged over positions: [B]."""
    cosine = F.cosine_similarity(predicted, target, dim=1)
    return (1 - cosine).mean(dim=list(range(1, cosine.ndim)))


class DiffusionLoss:
    """DiT: ADM's loss (MSE + VB with learned sigma) at a timestep of `diffusion` drawn by `weighting` (lognormal:
    the step floor(sigmoid(n) T), 1 = noise as in DiT's chain)."""

    def __init__(self, diffusion, weighting: str = "uniform"):
        self.diffusion, self.weighting = diffusion, weighting

    def __call__(self, model, x, y):
        steps = self.diffusion.num_timesteps
        if self.weighting == "uniform":
            t = torch.randint(0, steps, (x.shape[0],), device=x.device)
        else:
            t = (logit_normal(torch.randn(x.shape[0], device=x.device)) * steps).long().clamp(max=steps - 1)
        return self.diffusion.training_losses(model, x, t, dict(y=y))["loss"]


class TransportLoss:
    """SiT: the interpolant loss of `transport` (its path, prediction and loss weight) at times drawn by
    `weighting` on its training interval; `cos_loss` adds LightningDiT's 1 - cos(predicted, true velocity) over the
    channels, averaged over positions (velocity prediction)."""

    def __init__(self, transport, weighting: str = "uniform", cos_loss: bool = False):
        self.transport, self.weighting, self.cos_loss = transport, weighting, cos_loss

    def __call__(self, model, x, y):
        t = None
        if self.weighting == "lognormal":
            low, high = self.transport.check_interval(self.transport.train_eps, self.transport.sample_eps)
            t = logit_normal(torch.randn(x.shape[0]), low, high).to(x)
        terms = self.transport.training_losses(model, x, dict(y=y), t=t)
        if not self.cos_loss:
            return terms["loss"]
        return terms["loss"] + velocity_direction_loss(terms["pred"], terms["target"])
