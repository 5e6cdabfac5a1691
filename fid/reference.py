"""Reference files in ADM's layout: `arr_0` (reference images, for precision/recall and KID) and optionally
`mu`, `sigma` (pool features), `mu_s`, `sigma_s` (spatial features), the statistics of the whole set.

ADM's batches (e.g. VIRTUAL_imagenet256_labeled.npz) load as they are; `fid ref` writes the same keys. As in
ADM's evaluator, a file with `arr_0` alone gets its statistics from the features of those images.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from common.files import (
    atomic_open,  # the project's one atomic writer
    sha256_of_file,
)

from .errors import FIDError
from .images import NpzImages, npz_keys, open_images
from .metrics import feature_statistics
from .networks import FEATURE_NETWORKS, build_extractor, feature_network

STATISTICS = {"mu": "pool", "sigma": "pool", "mu_s": "spatial", "sigma_s": "spatial"}  # key -> features
ADM_LAYOUT = ("ADM's layout is arr_0 (uint8 reference images [N, H, W, 3]) with optional mu, sigma, mu_s, "
              "sigma_s (statistics of the full set, used instead of arr_0's)")


@dataclass
class Reference:
    path: str
    sha256: str
    mu: np.ndarray | None = None  # None: computed from the images' features, as ADM does
    sigma: np.ndarray | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    images: object = None  # an image source (images.py): arr_0 of the file, or images in memory
    # Features of `images` per weights sha256: computed (or read from the cache) once per process.
    image_features: dict = field(default_factory=dict)

    def statistics_source(self):
        return "mu/sigma in the file" if self.mu is not None else f"arr_0 ({len(self.images)} images)"


def check_keys(path, keys):
    """Statistics come in pairs, and either they or the images (from which ADM computes them) are there."""
    for mean, covariance in (("mu", "sigma"), ("mu_s", "sigma_s")):
        if (mean in keys) != (covariance in keys):
            missing = covariance if mean in keys else mean
            raise FIDError(f"reference {path} is missing '{missing}' (has {keys}); {mean} and {covariance} "
                           f"come together; {ADM_LAYOUT}")
    if "mu" not in keys and ("arr_0" not in keys or "mu_s" in keys):
        missing = "arr_0" if "arr_0" not in keys else "mu"
        raise FIDError(f"reference {path} is missing '{missing}' (has {keys}); {ADM_LAYOUT}; make one with "
                       f"`python -m fid ref`")


def expected_shape(key, dims):
    dim = dims[STATISTICS[key]]
    return (dim,) if key.startswith("mu") else (dim, dim)


def check_statistics(path, stats, features):
    """Shapes of the features' network (naming the network that has the file's), and finite values."""
    dims = feature_network(features).feature_dims
    for key, value in stats.items():
        if value.shape != expected_shape(key, dims):
            kind = STATISTICS[key]
            others = [name for name, network in FEATURE_NETWORKS.items()
                      if value.shape == expected_shape(key, network.feature_dims)]
            hint = f"made with --features {others[0]}?" if others else "made with another feature network?"
            raise FIDError(f"reference {path}: '{key}' has shape {list(value.shape)}, expected "
                           f"{list(expected_shape(key, dims))} ({features} {kind} features); {hint}")
        if not np.isfinite(value).all():
            raise FIDError(f"reference {path}: '{key}' has non-finite values")


def load_reference(path, features="inception"):
    """Read and check a reference file for a feature network ("inception" or "digits"); every problem is one
    FIDError naming the file and the key."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FIDError(f"reference file not found: {path} (use ADM's reference batch or make one with "
                       f"`python -m fid ref IMAGES --out {path}`)")
    try:
        keys = npz_keys(path)
        arrays = np.load(path)
    except Exception as error:  # not a zip, truncated, pickled objects, ...
        raise FIDError(f"{path} is not a readable .npz reference ({type(error).__name__}: {error})") from None
    check_keys(path, keys)
    with arrays:
        stats = {key: read_array(path, arrays, key).astype(np.float64) for key in STATISTICS if key in keys}
    check_statistics(path, stats, features)
    images = NpzImages(path) if "arr_0" in keys else None
    return Reference(path=path, sha256=sha256_of_file(path), images=images, **stats)


def read_array(path, arrays, key) -> np.ndarray:
    """One array of an open .npz; an object array (a pickle, which is never loaded) is named."""
    try:
        return arrays[key]
    except ValueError as error:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        raise FIDError(f"{path}: {key} is not a numeric array ({error}); a reference holds float arrays only, "
                       f"make it again with `python -m fid ref`") from None


def make_reference(images, out, image_size=256, num_kept=10000, seed=0, inception_weights=None, device=None,
                   batch_size=200, num_workers=0, progress=True, extractor=None, features="inception",
                   cache_dir=None):
    """Statistics of every image (a folder, ADM-center-cropped to `image_size`, an `.npz` or a uint8 array)
    on a feature network (`extractor`, else built from `features`), plus a seeded random subset of
    `num_kept` images as `arr_0`, written to `out` in ADM's layout."""
    images_name = os.fspath(images) if isinstance(images, str | os.PathLike) else "<array>"
    source = open_images(images, image_size=image_size, name="reference images")
    if len(source) < 2:
        raise FIDError(f"{images_name}: a reference needs at least 2 images, got {len(source)}")
    extractor = extractor or build_extractor(features, inception_weights, device, cache_dir)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(source), min(num_kept, len(source)), replace=False))
    computed = extractor(source, batch_size, num_workers, progress, desc="reference", keep=keep)
    mu, sigma = feature_statistics(computed["pool"])
    mu_s, sigma_s = feature_statistics(computed["spatial"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    kept = {"arr_0": computed["images"]} if len(keep) else {}  # no arr_0: precision/recall are skipped
    with atomic_open(out) as file:
        np.savez(file, **kept, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return {"reference": out, "num_images": len(source), "num_kept": len(keep), "images": images_name}
