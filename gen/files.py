"""Writing files so that a crash never leaves a half-written one under its real name: the one atomic writer that
every file of the toolkit goes through (checkpoint folders, which hold many files, use a manifest instead)."""
import contextlib
import hashlib
import os

import numpy as np


@contextlib.contextmanager
def atomic_path(path):
    """A temporary name beside `path` (unique to this process) for the block to write; renamed to `path` when the
    block finishes without an error, removed when it does not."""
    temporary = f"{os.fspath(path)}.tmp-{os.getpid()}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Open a temporary file for writing; it becomes `path` once the block finishes without an error."""
    with atomic_path(path) as temporary, open(temporary, mode) as handle:
        yield handle


def sha256_of_file(path, chunk_size=1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def save_samples_npz(path, images: np.ndarray, labels: np.ndarray):
    """ADM's sample layout: arr_0 uint8 [N, H, W, 3], arr_1 the class labels."""
    with atomic_open(path) as handle:
        np.savez(handle, arr_0=images, arr_1=labels)
