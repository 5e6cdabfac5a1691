"""Checks of command-line values, run before any expensive work; each failure is one UserError line.

    at_least(settings, 1, "max_steps", "global_batch_size")   # names are fields (or flag destinations)
    writable_folder(args.results_dir, "--results-dir")
"""
import math
import os

from common.errors import InvalidValue, UserError

from ..sampling.guidance import GUIDANCE_FOR_FID, GUIDANCE_FOR_PICTURES


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def at_least(args, minimum, *dests):
    """Each named value that is set (not None) is >= minimum."""
    for dest in dests:
        value_at_least(getattr(args, dest), minimum, flag(dest))


def value_at_least(value, minimum, name: str):
    """The rule of at_least for one value, `name` as the caller spells it (a flag, a Python argument)."""
    if value is not None and not value >= minimum:
        raise InvalidValue(f"{name} must be at least {minimum}, got {value}")


def within(args, dest, low, high, *, high_open=False):
    """low <= value <= high (or < high), and a number; None is left alone."""
    value_within(getattr(args, dest), low, high, flag(dest), high_open=high_open)


def value_within(value, low, high, name: str, *, high_open=False):
    if value is None:
        return
    inside = low <= value and (value < high if high_open else value <= high)  # NaN compares False: outside
    if not inside:
        bracket = ")" if high_open else "]"
        raise InvalidValue(f"{name} must lie in [{low}, {high}{bracket}, got {value}")


def positive(args, *dests):
    """Finite and > 0 (a learning rate, a tolerance); None is left alone."""
    for dest in dests:
        value = getattr(args, dest)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InvalidValue(f"{flag(dest)} must be a positive number, got {value}")


def guidance_scale(value, name="--cfg-scale"):
    """Classifier-free guidance: 1 is the conditional model, above 1 guides; anything else is a mistake."""
    if value is not None and not (math.isfinite(value) and value >= 1):
        raise InvalidValue(f"{name} must be a number >= 1 (1: no guidance; DiT uses {GUIDANCE_FOR_FID} for FID, "
                           f"{GUIDANCE_FOR_PICTURES} for pictures), got {value}")


MAX_SAMPLING_STEPS = 100_000  # 100x ADM's longest chain: a larger count is a typo that would run for days


def sampling_steps(value, name="--num-sampling-steps"):
    value_at_least(value, 1, name)
    value_within(value, 1, MAX_SAMPLING_STEPS, name)


def writable_folder(path, what: str):
    """Create `path` (and its parents) if needed and make sure files can be written in it; its name must be text
    (tensorboard and the logs cannot write a name of non-UTF-8 bytes)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fspath(path).encode("utf-8", "backslashreplace").decode()
        raise UserError(f"{what} {shown} has bytes that are not UTF-8 text in its name; rename it or pick another "
                        f"folder") from None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {what} {path}: {error.strerror}; pick a folder you can write") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write in {what} {path}: permission denied; pick a folder you can write")


def writable_file(path, what: str):
    """The folder of `path` exists or can be made, and is writable; an existing folder at `path` is refused."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a folder; give a file name such as {os.path.join(path, 'sample.png')}")
    writable_folder(os.path.dirname(os.path.abspath(path)), f"the folder of {what}")


MAX_SEED = 2**32 - 1  # numpy's and torch's generators take it, also as seed * processes + rank
MAX_CLASSES = 100_000  # a label-embedding row per class; ImageNet-21k has 21,841


def seed(args, *dests):
    for dest in dests:
        value_within(getattr(args, dest), 0, MAX_SEED, flag(dest))


def class_count(args, dest="num_classes"):
    value = getattr(args, dest)
    if value is not None and value > MAX_CLASSES:
        raise InvalidValue(f"{flag(dest)} must be at most {MAX_CLASSES:,} (a label-embedding row per class), got "
                        f"{value}")
