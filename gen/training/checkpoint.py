"""Training checkpoints: `results/ckpt/step-0001000/`, each written whole or not at all, and verified when read.

A checkpoint folder holds what `accelerator.save_state` writes (model, optimiser, gradient scaler, each
process's RNG states), plus `ema.safetensors` (the EMA export with its config: what `gen.load_pretrained` reads),
`training_state.json` (step, data position, the run's flags) and, written last, `manifest.json`: the size and
sha256 of every other file. It is written as `step-XXXXXXX.tmp` and renamed when complete, so a crash mid-write
leaves the previous checkpoint as the latest one; a file damaged later is found by the manifest.
`ckpt/losses.jsonl` records the loss that each checkpoint's weights gave on the next batch, so that after a
NaN the run can name a checkpoint whose weights had not yet blown up.
"""
import json
import math
import os
import pickle
import re
import shutil

from accelerate.utils import RNG_STATE_NAME
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_file

from common.errors import UserError
from common.files import atomic_open, sha256_of_file

from ..run_log import RUN_RECORD
from ..weights.export import CHECKPOINT_WEIGHTS, CheckpointError, save_pretrained, torch_load_reason

CHECKPOINTS = "ckpt"
TRAINING_STATE = "training_state.json"
MANIFEST = "manifest.json"
CHECKPOINT_LOSSES = "losses.jsonl"
CHECKPOINT_NAME = re.compile(r"^step-(\d{7,})$")
SANE_LOSS_FACTOR = 10  # a checkpoint whose weights give more than 10x the run's best loss has blown up

# Flags that decide what a checkpoint's weights, optimiser state and data position mean: a resumed run must
# keep them. Optimiser settings (lr, weight decay, EMA decay, clipping) may change and are applied.
FIXED_ON_RESUME = ("model", "data_path", "latents", "image_size", "num_classes", "vae", "random_flip",
                   "global_batch_size", "global_seed", "class_dropout_prob", "noise_schedule", "use_kl",
                   "sigma_small", "predict_xstart", "learn_sigma", "rescale_learned_sigmas", "diffusion_steps",
                   "path_type", "prediction", "loss_weight", "train_eps", "latent_norm")
SAVED_BEFORE_THE_FLAG = {"latent_norm": "scalar"}  # what a checkpoint from before a fixed flag existed trained with
APPLIED_ON_RESUME = ("lr", "warmup_steps", "weight_decay", "ema_decay", "max_grad_norm")


class CheckpointNotFound(UserError, FileNotFoundError):
    pass


class DamagedCheckpoint(UserError):
    """A checkpoint whose files do not match its manifest; the message names the file."""


def checkpoint_path(results_dir, step: int) -> str:
    return os.path.join(results_dir, CHECKPOINTS, f"step-{step:07d}")


def checkpoint_step(path) -> int:
    return int(CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path))).group(1))


def list_checkpoints(results_dir) -> list[str]:
    """Finished checkpoints under `results_dir` (a manifest was written), oldest first; .tmp folders are not."""
    folder = os.path.join(results_dir, CHECKPOINTS)
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, name)) for name in os.listdir(folder)
             if (m := CHECKPOINT_NAME.match(name)) and os.path.isfile(os.path.join(folder, name, MANIFEST))]
    return [path for _, path in sorted(found)]


# -- the manifest ------------------------------------------------------------------------------------------------
def checkpoint_files(folder) -> list[str]:
    """Every file under `folder` but the manifest, as sorted relative paths."""
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, name), folder) for name in names]
    return sorted(name for name in found if name != MANIFEST)


def write_manifest(folder):
    paths = {name: os.path.join(folder, name) for name in checkpoint_files(folder)}
    files = {name: {"bytes": os.path.getsize(path), "sha256": sha256_of_file(path)} for name, path in paths.items()}
    with atomic_open(os.path.join(folder, MANIFEST), "w") as handle:
        json.dump({"files": files}, handle, indent=1)


def verify_checkpoint(folder):
    """Raise DamagedCheckpoint naming the first file that is missing, of another size or another hash."""
    try:
        with open(os.path.join(folder, MANIFEST)) as handle:
            files = json.load(handle)["files"]
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{folder} has no {MANIFEST}: it is unfinished or not a training checkpoint") from None
    except (ValueError, KeyError):
        raise DamagedCheckpoint(f"{os.path.join(folder, MANIFEST)} is unreadable") from None
    for name, expected in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DamagedCheckpoint(f"{path} is missing")
        size = os.path.getsize(path)
        if size != expected["bytes"]:
            raise DamagedCheckpoint(f"{path} is {size} bytes, the manifest says {expected['bytes']} (truncated?)")
        if sha256_of_file(path) != expected["sha256"]:
            raise DamagedCheckpoint(f"{path} does not match the sha256 in its manifest (damaged)")


# -- choosing one ------------------------------------------------------------------------------------------------
def resolve_resume(resume: str, results_dir, warn=print) -> str:
    """The checkpoint folder that `--resume latest|PATH` names, verified. `latest` skips damaged ones (and says
    so through `warn`) but never deletes them."""
    if resume != "latest":
        if not os.path.isdir(resume) or CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(resume))) is None:
            raise CheckpointNotFound(f"--resume {resume}: not a training checkpoint folder; pass a folder like "
                                     f"{checkpoint_path(results_dir, 1000)} or 'latest'")
        try:
            verify_checkpoint(resume)
        except DamagedCheckpoint as error:
            raise DamagedCheckpoint(f"--resume {resume}: {error}; resume from an earlier checkpoint") from None
        return resume
    found = list_checkpoints(results_dir)
    for path in reversed(found):
        try:
            verify_checkpoint(path)
            return path
        except DamagedCheckpoint as error:
            warn(f"skipping checkpoint {path}: {error}; it is kept (renamed {os.path.basename(path)}.damaged "
                 f"should this run save that step again)")
    detail = f"; {len(found)} found, none intact" if found else ""
    raise CheckpointNotFound(f"--resume latest: no finished checkpoint under {results_dir}/{CHECKPOINTS}{detail}; "
                             f"check --results-dir, or start a new run without --resume in another --results-dir")


# -- the run folder ---------------------------------------------------------------------------------------------


def run_files(folder) -> set[str]:
    """Every entry of a folder where a run started (it wrote RUN_RECORD first), none of any other folder."""
    return set(os.listdir(folder)) if os.path.isfile(os.path.join(folder, RUN_RECORD)) else set()


# -- writing and reading -----------------------------------------------------------------------------------------
def save_checkpoint(accelerator, results_dir, step: int, ema, training_state: dict, settings: dict) -> str:
    """Write checkpoint `step` (every process must call this); returns its folder. `settings`: the VAE and
    process that the EMA export records (gen.weights.export.save_pretrained)."""
    final = checkpoint_path(results_dir, step)
    temporary = final + ".tmp"
    if accelerator.is_main_process and os.path.isdir(temporary):
        shutil.rmtree(temporary)  # the remains of a crash mid-write
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(temporary)
        accelerator.wait_for_everyone()  # every process's RNG file is in before the manifest lists them
        if accelerator.is_main_process:
            save_pretrained(ema, os.path.join(temporary, CHECKPOINT_WEIGHTS), ema=True, **settings)
            write_json(os.path.join(temporary, TRAINING_STATE), dict(training_state, step=step))
            write_manifest(temporary)
            replace_folder(temporary, final)
    except Exception:
        if accelerator.is_main_process:  # a failed write (a full disk) leaves no half-written folder behind
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def replace_folder(source, target):
    """Rename `source` to `target`; an existing `target` (the same step saved again) goes only afterwards, or, when
    it is damaged (what --resume latest skipped), is kept as `target`.damaged for inspection."""
    damaged = os.path.isdir(target) and not is_intact(target)
    old = unused_name(target + ".damaged") if damaged else target + ".old"
    if os.path.isdir(target):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(source, target)
    if not damaged:
        shutil.rmtree(old, ignore_errors=True)


def is_intact(folder) -> bool:
    try:
        verify_checkpoint(folder)
        return True
    except DamagedCheckpoint:
        return False


def unused_name(path) -> str:
    """`path`, or `path`-2, -3, ... when it exists (a step damaged twice keeps both)."""
    candidates = (path if n == 1 else f"{path}-{n}" for n in range(1, 1000))
    return next(name for name in candidates if not os.path.exists(name))


def load_checkpoint(accelerator, path, ema) -> dict:
    """Restore model, optimiser and RNG states through Accelerate and the EMA; returns the training state. A file
    that does not load under weights_only (a pickle of code) is refused in one line: Accelerate would raise a
    traceback for the optimiser, and for the RNG state only log and resume no longer bit-exact."""
    rng_state = os.path.join(path, f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl")
    try:
        if os.path.isfile(rng_state):
            accelerate_load(rng_state)
        accelerator.load_state(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"cannot restore {path} ({torch_load_reason(error)}); its files load only as tensors "
                              f"and plain values: resume from another checkpoint, or start again") from None
    ema.load_state_dict(load_file(os.path.join(path, CHECKPOINT_WEIGHTS)))
    with open(os.path.join(path, TRAINING_STATE)) as file:
        return json.load(file)


def write_json(path, value):
    with atomic_open(path, "w") as file:
        json.dump(value, file, indent=1)


def prune_checkpoints(results_dir, newest: str, keep: int, warn=print) -> list[str]:
    """Delete all but the newest `keep` finished checkpoints, once `newest` verifies (until then an older one
    may be what a run resumes from); returns the deleted folders."""
    try:
        verify_checkpoint(newest)
    except DamagedCheckpoint as error:
        warn(f"keeping every checkpoint: the newest does not verify ({error})")
        return []
    found = list_checkpoints(results_dir)
    doomed = found[: max(len(found) - keep, 0)]
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed


# -- which checkpoint can recover from a NaN ----------------------------------------------------------------------
def record_checkpoint_loss(results_dir, step: int, loss: float):
    """The loss that the weights of checkpoint `step` gave (step 0: the initial weights)."""
    with open(os.path.join(results_dir, CHECKPOINTS, CHECKPOINT_LOSSES), "a") as handle:
        handle.write(json.dumps({"step": step, "loss": loss}) + "\n")


def recoverable_checkpoint(results_dir):
    """(path, loss) of the newest finished checkpoint whose weights gave a finite loss within SANE_LOSS_FACTOR of
    the run's best, or (None, losses seen) when none did."""
    losses = {}
    path = os.path.join(results_dir, CHECKPOINTS, CHECKPOINT_LOSSES)
    if os.path.isfile(path):
        with open(path) as handle:
            for line in handle:
                entry = json.loads(line)
                losses[entry["step"]] = entry["loss"]  # a step saved again: the newest record
    finite = [loss for loss in losses.values() if math.isfinite(loss)]
    limit = SANE_LOSS_FACTOR * min(finite) if finite else -math.inf
    for folder in reversed(list_checkpoints(results_dir)):
        loss = losses.get(checkpoint_step(folder))
        if loss is not None and math.isfinite(loss) and loss <= limit:
            return folder, loss
    return None, losses


def resume_differences(saved: dict, now: dict) -> tuple[dict, dict]:
    """({flag: (saved, now)} that must not change, {flag: (saved, now)} that will be applied): the resume policy."""
    saved = {**SAVED_BEFORE_THE_FLAG, **saved}
    refused = {k: (saved[k], now[k]) for k in FIXED_ON_RESUME if k in saved and k in now and saved[k] != now[k]}
    applied = {k: (saved[k], now[k]) for k in APPLIED_ON_RESUME if k in saved and k in now and saved[k] != now[k]}
    return refused, applied
