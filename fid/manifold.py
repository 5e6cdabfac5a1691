"""Improved precision and recall (Kynkaanniemi et al. 2019) as ADM's ManifoldEstimator computes them.

Each set's manifold is the union of balls around its points, the radius of a point being the squared distance
to its k-th nearest neighbour in the same set (the point itself counts as the 0-th). Precision is the fraction
of samples inside the reference manifold, recall the fraction of reference points inside the sample manifold
(a point on a ball's surface is inside: `<=`).

Distances come in blocks of 10,000 x 10,000, as in ADM. By default ("float16-first") each block is computed
from float16 features, in ADM's order `(|u|^2 - 2 u.v) + |v|^2` clamped at 0, with float16 results after each
op (products and sums accumulated in float32, as TensorFlow does on a GPU); a block with any non-finite value
is recomputed in float32. "float32" computes every block in float32.
"""

import contextlib

import torch

ADM_BLOCK_SIZE = 10000
DISTANCE_PRECISIONS = {
    "float16-first": "float16 distance blocks, float32 where a block overflows (ADM's ManifoldEstimator)",
    "float32": "float32 distance blocks",
}


@contextlib.contextmanager
def full_float32_matmul():
    """TF32 would round the features to 10 bits inside the matmul; distances need float32 products."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def squared_distances(a, b):
    """[len(a), len(b)] squared Euclidean distances in the dtype of a and b, in ADM's order of operations."""
    norm_a = (a * a).float().sum(1).to(a.dtype)
    norm_b = (b * b).float().sum(1).to(b.dtype)
    products = (a.float() @ b.float().T).to(a.dtype)
    return (norm_a[:, None] - 2 * products + norm_b[None, :]).clamp_min(0)


def distance_block(a, b, precision="float16-first"):
    """float32 squared distances of one block: float16 first, float32 where float16 overflowed."""
    if precision not in DISTANCE_PRECISIONS:
        raise ValueError(f"unknown distance precision {precision!r}; choose one of {sorted(DISTANCE_PRECISIONS)}")
    if precision == "float16-first":
        block = squared_distances(a.half(), b.half())
        if torch.isfinite(block).all():
            return block.float()
    return squared_distances(a.float(), b.float())


def manifold_radii(features, k, precision, block_size=ADM_BLOCK_SIZE):
    """Squared distance from each point to its k-th nearest neighbour in the same set."""
    radii = []
    for rows in features.split(block_size):
        nearest = rows.new_empty(len(rows), 0)
        for columns in features.split(block_size):
            # Keep the k + 1 smallest per row so far: the same value as sorting the whole row, in block memory.
            candidates = torch.cat([nearest, distance_block(rows, columns, precision)], dim=1)
            nearest = candidates.topk(min(k + 1, candidates.shape[1]), dim=1, largest=False).values
        radii.append(nearest[:, k])
    return torch.cat(radii)


def precision_recall(ref_features, sample_features, k=3, device="cpu", precision="float16-first",
                     block_size=ADM_BLOCK_SIZE):
    """ADM's precision and recall of samples against reference images, both from pool features.

    `precision`: "float16-first" (default, ADM's distances) or "float32"; see DISTANCE_PRECISIONS.
    """
    ref = torch.as_tensor(ref_features, dtype=torch.float32, device=device)
    samples = torch.as_tensor(sample_features, dtype=torch.float32, device=device)
    if len(ref) <= k or len(samples) <= k:
        raise ValueError(f"precision/recall need more than k={k} points per set, "
                         f"got {len(ref)} reference and {len(samples)} sample features")
    with full_float32_matmul():
        ref_radii = manifold_radii(ref, k, precision, block_size)
        sample_radii = manifold_radii(samples, k, precision, block_size)
        ref_inside = torch.zeros(len(ref), dtype=torch.bool, device=device)
        samples_inside = torch.zeros(len(samples), dtype=torch.bool, device=device)
        for row in range(0, len(ref), block_size):
            rows = slice(row, row + block_size)
            for column in range(0, len(samples), block_size):
                columns = slice(column, column + block_size)
                # Reference rows, sample columns: ADM's order, which float16 rounding is sensitive to.
                block = distance_block(ref[rows], samples[columns], precision)
                ref_inside[rows] |= (block <= sample_radii[None, columns]).any(dim=1)
                samples_inside[columns] |= (block <= ref_radii[rows, None]).any(dim=0)
    return float(samples_inside.double().mean()), float(ref_inside.double().mean())
