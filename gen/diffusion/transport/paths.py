"""SiT's interpolants x_t = alpha_t * x1 + sigma_t * x0 between noise x0 (t = 0) and data x1 (t = 1).

Each path gives alpha_t, sigma_t and their time derivatives; everything else (the target velocity, the
probability-flow drift in score form, the SDE diffusion forms) is written once in `Path`. Time tensors are
[B] or already broadcast to x; the helpers broadcast them.
"""
import math

import torch

from ..batch_ops import append_dims


class Path:
    """Shared interpolant algebra; subclasses define alpha, sigma and d_log_alpha."""

    def alpha(self, t):
        """(alpha_t, d alpha_t / dt): the data coefficient."""
        raise NotImplementedError

    def sigma(self, t):
        """(sigma_t, d sigma_t / dt): the noise coefficient."""
        raise NotImplementedError

    def d_log_alpha(self, t):
        """alpha_t' / alpha_t, written per path to stay finite where it can."""
        raise NotImplementedError

    def score_coefficient(self, t):
        """lambda_t in the probability-flow velocity v = (alpha'/alpha) x + lambda_t * score."""
        sigma_t, d_sigma_t = self.sigma(t)
        return self.d_log_alpha(t) * sigma_t**2 - sigma_t * d_sigma_t

    def plan(self, t, x0, x1):
        """(t, x_t, u_t): the interpolant between noise x0 and data x1 at t and its conditional velocity."""
        tx = append_dims(t, x1.ndim)
        alpha_t, d_alpha_t = self.alpha(tx)
        sigma_t, d_sigma_t = self.sigma(tx)
        return t, alpha_t * x1 + sigma_t * x0, d_alpha_t * x1 + d_sigma_t * x0

    def velocity_from_score(self, score, x, t):
        tx = append_dims(t, x.ndim)
        return self.d_log_alpha(tx) * x + self.score_coefficient(tx) * score

    def score_from_velocity(self, velocity, x, t):
        """Invert v = (alpha'/alpha) x + lambda score, times alpha/alpha' to stay finite at t = 0."""
        tx = append_dims(t, x.ndim)
        alpha_t, d_alpha_t = self.alpha(tx)
        sigma_t, d_sigma_t = self.sigma(tx)
        alpha_over_d_alpha = alpha_t / d_alpha_t
        variance = sigma_t**2 - alpha_over_d_alpha * d_sigma_t * sigma_t
        return (alpha_over_d_alpha * velocity - x) / variance

    def diffusion(self, x, t, form="SBDM", norm=1.0):
        """The SDE's diffusion w_t (noise sqrt(2 w_t) dW, drift v + w_t * score) in one of SiT's forms."""
        tx = append_dims(t, x.ndim)
        if form == "constant":
            return torch.full_like(tx, norm)
        if form == "SBDM":  # score-based diffusion models' choice: w_t = lambda_t
            return norm * self.score_coefficient(tx)
        if form == "sigma":
            return norm * self.sigma(tx)[0]
        if form == "linear":
            return norm * (1 - tx)
        if form == "decreasing":
            return 0.25 * (norm * torch.cos(math.pi * tx) + 1) ** 2
        if form == "increasing-decreasing":
            return norm * torch.sin(math.pi * tx) ** 2
        raise ValueError(f"unknown diffusion form {form!r}; use constant, SBDM, sigma, linear, decreasing "
                         "or increasing-decreasing")


class LinearPath(Path):
    """alpha_t = t, sigma_t = 1 - t (SiT's "Linear", rectified flow)."""

    def alpha(self, t):
        return t, torch.ones_like(t)

    def sigma(self, t):
        return 1 - t, -torch.ones_like(t)

    def d_log_alpha(self, t):
        return 1 / t


class GVPPath(Path):
    """alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2): variance preserving along the way (SiT's "GVP")."""

    def alpha(self, t):
        return torch.sin(t * math.pi / 2), math.pi / 2 * torch.cos(t * math.pi / 2)

    def sigma(self, t):
        return torch.cos(t * math.pi / 2), -math.pi / 2 * torch.sin(t * math.pi / 2)

    def d_log_alpha(self, t):
        return math.pi / (2 * torch.tan(t * math.pi / 2))


class VPPath(Path):
    """Score-SDE's VP process with linear beta from sigma_min to sigma_max, time reversed (SiT's "VP").

    alpha_t = exp(log_mean(t)), sigma_t = sqrt(1 - alpha_t^2); t = 1 is data, so alpha_1 = 1, sigma_1 = 0.
    """

    def __init__(self, sigma_min: float = 0.1, sigma_max: float = 20.0):
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def log_mean(self, t):
        return -0.25 * (1 - t) ** 2 * (self.sigma_max - self.sigma_min) - 0.5 * (1 - t) * self.sigma_min

    def d_log_alpha(self, t):
        return 0.5 * (1 - t) * (self.sigma_max - self.sigma_min) + 0.5 * self.sigma_min

    def alpha(self, t):
        alpha_t = torch.exp(self.log_mean(t))
        return alpha_t, alpha_t * self.d_log_alpha(t)

    def sigma(self, t):
        alpha_sq = torch.exp(2 * self.log_mean(t))
        sigma_t = torch.sqrt(1 - alpha_sq)
        return sigma_t, alpha_sq * (2 * self.d_log_alpha(t)) / (-2 * sigma_t)

    def score_coefficient(self, t):
        return (self.sigma_min + (1 - t) * (self.sigma_max - self.sigma_min)) / 2  # beta_t / 2 in closed form
