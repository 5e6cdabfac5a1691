"""Training checkpoints: `results/ckpt/step-0001000/`, each written whole or not at all.

A checkpoint folder holds what `accelerator.save_state` writes (model, optimiser, gradient scaler, each
process's RNG states), plus `ema.safetensors` and `model_config.json` (what `gen.load_pretrained` reads)
and `training_state.json` (step and data position). It is written as `step-XXXXXXX.tmp` and renamed when
complete, so a crash mid-write leaves the previous checkpoint as the latest one.
"""
import json
import os
import re
import shutil

from safetensors.torch import load_file

from .export import CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, save_pretrained

CHECKPOINTS = "ckpt"
TRAINING_STATE = "training_state.json"
CHECKPOINT_NAME = re.compile(r"^step-(\d{7,})$")


class CheckpointNotFound(FileNotFoundError):
    pass


def checkpoint_path(results_dir, step: int) -> str:
    return os.path.join(results_dir, CHECKPOINTS, f"step-{step:07d}")


def list_checkpoints(results_dir) -> list[str]:
    """Finished checkpoints under `results_dir`, oldest first (unfinished .tmp folders are ignored)."""
    folder = os.path.join(results_dir, CHECKPOINTS)
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, name)) for name in os.listdir(folder)
             if (m := CHECKPOINT_NAME.match(name)) and os.path.isfile(os.path.join(folder, name, TRAINING_STATE))]
    return [path for _, path in sorted(found)]


def resolve_resume(resume: str, results_dir) -> str:
    """The checkpoint folder that `--resume latest|PATH` names."""
    if resume == "latest":
        found = list_checkpoints(results_dir)
        if not found:
            raise CheckpointNotFound(f"--resume latest: no finished checkpoint under {results_dir}/{CHECKPOINTS}; "
                                     f"check --results-dir, or start without --resume")
        return found[-1]
    if not os.path.isfile(os.path.join(resume, TRAINING_STATE)):
        raise CheckpointNotFound(f"--resume {resume}: not a finished training checkpoint (no {TRAINING_STATE}); "
                                 f"pass a folder like {checkpoint_path(results_dir, 1000)} or 'latest'")
    return resume


def save_checkpoint(accelerator, results_dir, step: int, ema, training_state: dict) -> str:
    """Write checkpoint `step` (every process must call this); returns its folder."""
    final = checkpoint_path(results_dir, step)
    temporary = final + ".tmp"
    if accelerator.is_main_process and os.path.isdir(temporary):
        shutil.rmtree(temporary)  # the remains of a crash mid-write
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    if accelerator.is_main_process:
        save_pretrained(ema, os.path.join(temporary, CHECKPOINT_WEIGHTS), ema=True)
        write_json(os.path.join(temporary, CHECKPOINT_CONFIG), {"name": ema.name, "config": ema.config})
        write_json(os.path.join(temporary, TRAINING_STATE), dict(training_state, step=step))
        if os.path.isdir(final):
            shutil.rmtree(final)  # the same step saved again (e.g. a resumed run that was stopped right after)
        os.replace(temporary, final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path, ema) -> dict:
    """Restore model, optimiser and RNG states through Accelerate and the EMA; returns the training state."""
    accelerator.load_state(path)
    ema.load_state_dict(load_file(os.path.join(path, CHECKPOINT_WEIGHTS)))
    with open(os.path.join(path, TRAINING_STATE)) as file:
        return json.load(file)


def write_json(path, value):
    with open(path, "w") as file:
        json.dump(value, file, indent=1)
