"""Improved precision and recall (Kynkaanniemi et al. 2019) with the semantics of ADM's ManifoldEstimator.

Each set's manifold is the union of balls around its points, the radius of a point being the distance to
its k-th nearest neighbour in the same set (the point itself excluded). Precision is the fraction of
samples inside the reference manifold, recall the fraction of reference points inside the sample manifold.
Distances are squared Euclidean in float32 (ADM tries float16 first), in blocks so that 50K x 10K fits.
"""

import torch


def squared_distances(a, b):
    """[len(a), len(b)] squared Euclidean distances, clamped at 0 against round-off."""
    return ((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]).clamp_min_(0)


def manifold_radii(features, k=3, block_size=5000):
    """Squared distance from each point to its k-th nearest neighbour in the same set."""
    radii = [torch.kthvalue(squared_distances(block, features), k + 1, dim=1).values
             for block in features.split(block_size)]
    return torch.cat(radii)


def inside_manifold(points, manifold, radii, block_size=5000):
    """Whether each point lies within the radius of at least one manifold point (ADM's `<=`)."""
    inside = [(squared_distances(block, manifold) <= radii[None, :]).any(dim=1)
              for block in points.split(block_size)]
    return torch.cat(inside)


def precision_recall(ref_features, sample_features, k=3, device="cpu", block_size=5000):
    """ADM's precision and recall of samples against reference images, both from pool features."""
    ref = torch.as_tensor(ref_features, dtype=torch.float32, device=device)
    samples = torch.as_tensor(sample_features, dtype=torch.float32, device=device)
    if len(ref) <= k or len(samples) <= k:
        raise ValueError(f"precision/recall need more than k={k} points per set, "
                         f"got {len(ref)} reference and {len(samples)} sample features")
    precision = inside_manifold(samples, ref, manifold_radii(ref, k, block_size), block_size)
    recall = inside_manifold(ref, samples, manifold_radii(samples, k, block_size), block_size)
    return float(precision.double().mean()), float(recall.double().mean())
