"""Features of a reference file's images on disk, so a second `fid calc` runs the network on the samples only.

One `.npz` per (reference file, feature network, weights), named by both sha256s: a changed file or other
weights never reuse stale features. Written atomically; a file that does not read back is recomputed with a warning.
"""

import os
import warnings

import numpy as np

from common.files import atomic_open  # the project's one atomic writer

CACHE_ENV = "FID_CACHE_DIR"


def default_cache_dir():
    """$FID_CACHE_DIR, else the user's cache folder (XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vca-gen", "fid")


def cache_path(cache_dir, reference_sha256, network_name, weights_sha256):
    return os.path.join(cache_dir, f"reference-{reference_sha256}-{network_name}-{weights_sha256}.npz")


def read_cached_features(path, num_images, feature_dims):
    """{"pool", "spatial"} float32 features of `num_images` images (`feature_dims` wide), or None when absent
    or unreadable."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path) as arrays:
            features = {name: arrays[name].astype(np.float32) for name in feature_dims}
        for name, dim in feature_dims.items():
            if features[name].shape != (num_images, dim) or not np.isfinite(features[name]).all():
                raise ValueError(f"'{name}' is {features[name].dtype} {list(features[name].shape)}, expected "
                                 f"finite [{num_images}, {dim}]")
    except Exception as error:  # truncated, not a zip, wrong keys or shapes: recomputing fixes all of them
        warnings.warn(f"ignoring the corrupt feature cache {path} ({type(error).__name__}: {error}); "
                      f"recomputing it", stacklevel=2)
        return None
    return features


def write_cached_features(path, features):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path) as file:
        np.savez(file, pool=features["pool"], spatial=features["spatial"])
