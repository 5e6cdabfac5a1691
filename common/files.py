"""Writing files so that a crash never leaves a half-written one under its real name: the one atomic writer that
every file of the toolkit goes through (checkpoint folders, which hold many files, use a manifest instead)."""
import contextlib
import fcntl
import hashlib
import os
import shutil

import numpy as np

from .errors import UserError

LOCK_FILE = "run.lock"


class FolderInUse(UserError):
    """Another live process holds the folder's lock."""


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


def lock_folder(folder, what: str, warn=print):
    """Hold an OS lock on `folder`/run.lock until release_folder (the kernel drops it when the process dies, even by
    kill -9); the file names the holder's pid. A live holder: FolderInUse; a pid left by a dead one: taken over."""
    path = os.path.join(folder, LOCK_FILE)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FolderInUse(f"{what} {folder} is in use by a running process (pid {holder}, {path}); wait for it "
                          f"to finish or pick another {what}") from None
    handle.seek(0)
    previous = handle.read().strip()
    if previous:
        warn(f"taking over {path} from pid {previous}, which ended without releasing it (killed?)")
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def release_folder(handle):
    """Empty the lock file (a clean end leaves nothing to take over) and drop the lock."""
    handle.seek(0)
    handle.truncate()
    handle.flush()
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


@contextlib.contextmanager
def atomic_folder(path):
    """A temporary folder beside `path` for the block to fill; it replaces `path` (a folder or nothing) when the
    block finishes without an error and is removed when it does not, so `path` is never half-written."""
    path = os.fspath(path).rstrip(os.sep)
    temporary, previous = f"{path}.tmp-{os.getpid()}", f"{path}.old-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    try:
        yield temporary
        if os.path.isdir(path):
            os.replace(path, previous)
        os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
