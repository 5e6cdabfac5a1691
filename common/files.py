"""Writing files so that a crash never leaves a half-written one under its real name: the one atomic writer that
every file of the toolkit goes through (checkpoint folders, which hold many files, use a manifest instead)."""
import contextlib
import errno
import fcntl
import hashlib
import json
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


def save_safetensors(tensors: dict, path, metadata: dict | None = None):
    """safetensors' save_file under a temporary name, renamed when whole; its write errors (a SafetensorError that
    wraps the OS's) become OSError, so a full disk is the one line every command gives for it."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with atomic_path(path) as temporary:
        try:
            save_file(tensors, temporary, metadata=metadata)
        except SafetensorError as error:
            full = "(os error 28)" in str(error)
            raise OSError(errno.ENOSPC if full else errno.EIO, "No space left on device" if full else str(error),
                          os.fspath(path)) from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # safetensors creates its files 0600; weights are meant to be shared


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


class ForeignFiles(UserError):
    """An output path holds files that the command did not write: it refuses rather than delete or replace them."""


FOLDER_MARKER = ".written-by.json"  # in every folder atomic_folder writes: the writer and the entries it wrote


def folder_entries(path) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def named(entries, limit: int = 3) -> str:
    shown = ", ".join(entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def check_output_folder(path, what: str, own=lambda path: set(), ignored=()):
    """`path` may receive a command's output: it is missing, or a folder whose entries (but `ignored` names) are all
    among `own(path)`, the names the same command wrote there before (none by default: the folder must be empty).
    Anything else (a file, someone's photos, another program's output) is refused in one line."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ForeignFiles(f"{what} {path} is a file, not a folder; give a new folder name")
    foreign = [entry for entry in folder_entries(path) if entry not in {*ignored, *own(path)}]
    if foreign:
        raise ForeignFiles(f"{what} {path} holds files this command did not write ({named(foreign)}); it deletes "
                           f"and replaces nothing it did not write: give a new or empty folder")


def written_entries(path, writer: str) -> set[str]:
    """The names that atomic_folder(…, writer) wrote into `path` (its FOLDER_MARKER says), else none."""
    try:
        with open(os.path.join(path, FOLDER_MARKER)) as file:
            marker = json.load(file)
    except (OSError, ValueError):
        return set()
    listed = marker.get("entries") if isinstance(marker, dict) and marker.get("writer") == writer else None
    return {FOLDER_MARKER, *listed} if isinstance(listed, list) else set()


def check_replaceable(path, writer: str, what: str = "output folder"):
    """What atomic_folder(path, writer) checks first, for a command to call before its expensive work."""
    check_output_folder(path, what, own=lambda folder: written_entries(folder, writer))


@contextlib.contextmanager
def atomic_folder(path, writer: str, what: str = "output folder"):
    """A temporary folder beside `path` for the block to fill; it becomes `path` when the block finishes without an
    error and is removed when it does not, so `path` is never half-written. An existing `path` is replaced only when
    it is empty or this `writer` wrote it (FOLDER_MARKER lists what it wrote): anything else raises ForeignFiles
    before the block runs, and again before the swap (files may have arrived meanwhile)."""
    path = os.fspath(path).rstrip(os.sep)
    check_replaceable(path, writer, what)
    temporary, previous = f"{path}.tmp-{os.getpid()}", f"{path}.old-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)  # ours: a crash of this pid's earlier attempt
    os.makedirs(temporary)
    try:
        yield temporary
        with open(os.path.join(temporary, FOLDER_MARKER), "w") as file:
            json.dump({"writer": writer, "entries": folder_entries(temporary)}, file, indent=1)
        check_replaceable(path, writer, what)
        if folder_entries(path):
            os.replace(path, previous)  # ours whole (checked just now): removed below
        elif os.path.isdir(path):
            os.rmdir(path)  # empty: rmdir refuses should a file have arrived since
        os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
