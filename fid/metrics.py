"""The metrics on a network's features: Frechet distance (FID, sFID), Inception Score, KID, class accuracy.

FID and IS follow ADM's evaluator (guided-diffusion `evaluations/evaluator.py`) so that numbers compare
with the DiT and SiT papers; KID follows torch-fidelity's defaults.
"""

import warnings

import numpy as np
import torch
from scipy import linalg


def feature_statistics(features):
    """Mean and covariance of [N, D] features, in float64 as ADM's evaluator computes them."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def square_root(matrix) -> tuple[np.ndarray, bool]:
    """(scipy's matrix square root, whether scipy found the matrix singular), without scipy's LinAlgWarning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(matrix)
    return root, any(issubclass(warning.category, linalg.LinAlgWarning) for warning in caught)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Frechet distance between two Gaussians: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    mu1, mu2 = (np.atleast_1d(np.asarray(mu, np.float64)) for mu in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(sigma, np.float64)) for sigma in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in size: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean, singular = square_root(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # ADM's fallback: a singular product gets eps on both diagonals before the square root.
        warnings.warn(f"singular covariance product; adding {eps} to the diagonals", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean, _ = square_root((sigma1 + offset).dot(sigma2 + offset))
    elif singular:  # scipy's own warning, in words that say what to do
        warnings.warn(f"the covariance product of the {len(mu1)} features is singular (a feature constant over the "
                      f"images, or fewer images than features); the distance is computed, but from fewer "
                      f"directions: more, and more varied, images help", stacklevel=2)
    if np.iscomplexobj(covmean):
        # Round-off makes small imaginary parts; large ones mean the statistics are broken.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in the matrix square root")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


ADM_IS_SPLIT_SIZE = 5000
IS_SPLIT_RULES = {
    "adm": f"contiguous chunks of {ADM_IS_SPLIT_SIZE} samples, the last one shorter (ADM's evaluator)",
    "10-equal": "10 contiguous near-equal splits (improved-GAN, torch-fidelity)",
}


def inception_score_splits(log_probs, split_rule):
    """The chunks the score is averaged over; the rules agree at N = 50,000 and diverge below it."""
    if split_rule == "adm":
        return log_probs.split(ADM_IS_SPLIT_SIZE)
    if split_rule == "10-equal":
        return torch.tensor_split(log_probs, min(10, len(log_probs)))
    raise ValueError(f"unknown Inception Score split rule {split_rule!r}; choose one of {sorted(IS_SPLIT_RULES)}")


def inception_score(logits, split_rule="adm"):
    """Mean and std over chunks (see IS_SPLIT_RULES) of exp(E[KL(p(y|x) || p(y))]), p = softmax(logits).

    Computed in log space in float64: ADM's float32 `p * log(p)` gives the same score unless a probability
    underflows to 0, where it gives NaN.
    """
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    log_probs = torch.log_softmax(logits, dim=1)
    scores = []
    for chunk in inception_score_splits(log_probs, split_rule):
        log_marginal = torch.logsumexp(chunk, dim=0) - np.log(len(chunk))
        kl = (chunk.exp() * (chunk - log_marginal)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def kernel_inception_distance(features1, features2, subsets=100, subset_size=1000, seed=0):
    """Mean and std of the unbiased MMD^2 with the cubic polynomial kernel over random subsets: torch-fidelity's
    KID (its defaults and its subset draws), in float64, with subsets no larger than the smaller set."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    x_all, y_all = (torch.as_tensor(np.asarray(f), dtype=torch.float64) for f in (features1, features2))
    m = min(subset_size, len(x_all), len(y_all))
    if m < 2:
        return float("nan"), float("nan")
    kid = kid_features_to_metric(x_all, y_all, kid_subsets=subsets, kid_subset_size=m, rng_seed=seed, verbose=False)
    return kid[KEY_METRIC_KID_MEAN], kid[KEY_METRIC_KID_STD]


def class_accuracy(logits, labels):
    """(share of samples whose most probable class is their label, {class: that share} per label present)."""
    labels = np.asarray(labels)
    correct = np.asarray(logits).argmax(axis=1) == labels
    return float(correct.mean()), {int(label): float(correct[labels == label].mean()) for label in np.unique(labels)}
