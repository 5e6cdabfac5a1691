"""A 2-D Gaussian mixture whose noised versions are known in closed form, to stand in for a trained network.

Data x1 ~ sum_k w_k N(mu_k, S_k). Corrupted as x_t = a x1 + s n with n ~ N(0, I), component k becomes
N(a mu_k, C_k), C_k = a^2 S_k + s^2 I, and the posterior means are
    E[n | x_t]  = sum_k r_k(x_t) s C_k^{-1} (x_t - a mu_k)
    E[x1 | x_t] = sum_k r_k(x_t) (mu_k + a S_k C_k^{-1} (x_t - a mu_k))
with r_k the component responsibilities. Both stay finite at a = 0 or s = 0, so eps, score (-E[n]/s) and
velocity (a' E[x1] + s' E[n]) are exact everywhere a sampler may ask. All in float64.
"""
import math

import torch

DTYPE = torch.float64


class GaussianMixture:
    def __init__(self, weights, means, covariances):
        self.weights = torch.tensor(weights, dtype=DTYPE)
        self.means = torch.tensor(means, dtype=DTYPE)  # [K, 2]
        self.covariances = torch.tensor(covariances, dtype=DTYPE)  # [K, 2, 2]

    @property
    def mean(self):
        return self.weights @ self.means

    @property
    def covariance(self):
        second_moment = (self.covariances + self.means[:, :, None] * self.means[:, None, :])
        second_moment = (self.weights[:, None, None] * second_moment).sum(0)
        return second_moment - torch.outer(self.mean, self.mean)

    def sample(self, n, generator=None):
        components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covariances)[components]
        z = torch.randn(n, 2, 1, dtype=DTYPE, generator=generator)
        return self.means[components] + (chol @ z)[..., 0]

    def nearest_component(self, x):
        return torch.cdist(x.to(DTYPE), self.means).argmin(dim=1)

    def log_density(self, x):
        """log p(x) of clean data."""
        ones = torch.ones(len(x), dtype=DTYPE)
        return self._component_log_densities(x, ones, 0 * ones)[0]

    def _component_log_densities(self, x, a, s):
        """log p(x_t) and, per component, log w_k N(x_t; a mu_k, C_k) with C_k^{-1}(x_t - a mu_k)."""
        a_, s_ = a[:, None, None, None], s[:, None, None, None]
        cov = a_**2 * self.covariances + s_**2 * torch.eye(2, dtype=DTYPE)  # [B, K, 2, 2]
        centered = x[:, None, :] - a[:, None, None] * self.means  # [B, K, 2]
        solved = torch.linalg.solve(cov, centered[..., None])[..., 0]
        log_norm = -0.5 * (centered * solved).sum(-1) - 0.5 * torch.logdet(cov) - math.log(2 * math.pi)
        joint = torch.log(self.weights) + log_norm
        return torch.logsumexp(joint, dim=1), joint, solved

    def posterior_means(self, x, a, s):
        """(E[x1 | x_t], E[n | x_t]) for x_t = a x1 + s n; a and s are per-sample [B] tensors."""
        x = x.to(DTYPE)
        a, s = a.to(DTYPE).expand(len(x)), s.to(DTYPE).expand(len(x))
        _, joint, solved = self._component_log_densities(x, a, s)
        resp = torch.softmax(joint, dim=1)[..., None]  # [B, K, 1]
        noise = (resp * s[:, None, None] * solved).sum(1)
        data_given_component = self.means + a[:, None, None] * (self.covariances @ solved[..., None])[..., 0]
        data = (resp * data_given_component).sum(1)
        return data, noise


def three_blobs() -> GaussianMixture:
    """Three well separated components with unequal weights and shapes, inside [-1.5, 1.5]^2."""
    return GaussianMixture(
        weights=[0.5, 0.3, 0.2],
        means=[[-0.8, -0.5], [0.9, -0.3], [0.1, 0.9]],
        covariances=[
            [[0.04, 0.01], [0.01, 0.02]],
            [[0.02, 0.0], [0.0, 0.05]],
            [[0.03, -0.01], [-0.01, 0.03]],
        ],
    )


def assert_matches_mixture(samples, mixture, n_sigma=5.0, variance_shrink_allowance=0.0):
    """Sample mean, covariance and nearest-component fractions agree with the mixture's within n_sigma
    standard errors of an i.i.d. sample of this size: sqrt(Var/N) for the mean, sqrt(Var[(x_i - m_i)
    (x_j - m_j)] / N) for covariance entries (fourth moments from 200k exact draws, since a mixture is not
    Gaussian), sqrt(p (1 - p) / N) for the fractions (p from the same exact draws, so the rare sample
    nearer another component's mean counts the same on both sides). 5 sigma keeps a correct sampler's
    chance of failing any of the 10 checks near 1e-5, while an error of a few percent of the spread fails.
    `variance_shrink_allowance` lets the covariance shrink by up to that fraction (a known discretisation
    bias, for DDIM; see its test)."""
    samples = samples.to(DTYPE).reshape(len(samples), 2)
    assert torch.isfinite(samples).all()
    n = len(samples)
    reference = mixture.sample(200_000, generator=torch.Generator().manual_seed(1234))
    centered_ref = reference - mixture.mean
    cov_se = ((centered_ref[:, :, None] * centered_ref[:, None, :]).var(dim=0) / n).sqrt()
    mean_se = (torch.diagonal(mixture.covariance) / n).sqrt()
    num_components = len(mixture.weights)
    expected_fractions = torch.bincount(mixture.nearest_component(reference), minlength=num_components)
    expected_fractions = expected_fractions / len(reference)
    fraction_se = (expected_fractions * (1 - expected_fractions) * (1 / n + 1 / len(reference))).sqrt()

    mean_error = samples.mean(0) - mixture.mean
    sample_cov, true_cov = torch.cov(samples.T), mixture.covariance
    shrunk_cov = (1 - variance_shrink_allowance) * true_cov
    accepted_cov = sample_cov.clamp(torch.minimum(true_cov, shrunk_cov), torch.maximum(true_cov, shrunk_cov))
    cov_error = sample_cov - accepted_cov  # distance from [(1 - allowance) * true, true]
    fractions = torch.bincount(mixture.nearest_component(samples), minlength=num_components) / n
    fraction_error = fractions - expected_fractions
    assert (mean_error.abs() < n_sigma * mean_se).all(), ("mean", mean_error, mean_se)
    assert (cov_error.abs() < n_sigma * cov_se).all(), ("covariance", cov_error, cov_se)
    assert (fraction_error.abs() < n_sigma * fraction_se).all(), ("fractions", fraction_error, fraction_se)
