"""Writing files so that a crash never leaves a half-written one under its real name."""
import contextlib
import os

import numpy as np


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Open `path`.tmp for writing and rename it to `path` once the block finishes without an error."""
    temporary = f"{path}.tmp"
    with open(temporary, mode) as handle:
        yield handle
    os.replace(temporary, path)


def save_samples_npz(path, images: np.ndarray, labels: np.ndarray):
    """ADM's sample layout: arr_0 uint8 [N, H, W, 3], arr_1 the class labels."""
    with atomic_open(path) as handle:
        np.savez(handle, arr_0=images, arr_1=labels)
