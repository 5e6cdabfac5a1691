"""Checkpoints that are verified, never trusted blindly: damage is found and skipped, a process killed mid-write
loses nothing, a resumed run says what it changes, and the NaN stop names a checkpoint that can recover."""
import errno
import json
import os
import subprocess
import sys

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

import gen.training.checkpoint
import train_sit
from gen.training import TrainingError
from gen.training.checkpoint import DamagedCheckpoint, list_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--model", "SiT-Mini/4", "--image-size", "16", "--num-classes", "3", "--global-batch-size", "4",
         "--num-workers", "0", "--vae", "none", "--log-every", "1", "--sample-every", "0",
         "--num-sampling-steps", "2", "--sampling-method", "euler", "--ckpt-every", "1"]


def run(image_folder, results_dir, *extra):
    train_sit.main([*QUICK, "--data-path", image_folder, "--results-dir", str(results_dir), *extra])
    AcceleratorState._reset_state(reset_partial_state=True)


def final_weights(results_dir):
    return load_file(os.path.join(results_dir, "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)


def log_text(results_dir):
    with open(os.path.join(results_dir, "log.txt")) as file:
        return file.read()


DAMAGE = {
    "truncated model": ("model.safetensors", "truncate"),
    "truncated EMA": ("ema.safetensors", "truncate"),
    "truncated optimizer": ("optimizer.bin", "truncate"),
    "half-written training state": ("training_state.json", "truncate"),
    "truncated RNG state": ("random_states_0.pkl", "truncate"),
    "missing weights": ("model.safetensors", "delete"),
    "flipped byte in the EMA": ("ema.safetensors", "flip"),
}


def damage(path, how):
    if how == "delete":
        os.remove(path)
        return
    data = bytearray(open(path, "rb").read())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-1] ^= 0xFF
    with open(path, "wb") as file:
        file.write(data)


@pytest.mark.parametrize("kind", DAMAGE)
def test_resume_latest_skips_a_damaged_newest_checkpoint(image_folder, tmp_path, kind, capsys):
    run(image_folder, tmp_path, "--max-steps", "3")
    newest = list_checkpoints(tmp_path)[-1]
    name, how = DAMAGE[kind]
    damage(os.path.join(newest, name), how)
    run(image_folder, tmp_path, "--max-steps", "4", "--resume", "latest")
    text = log_text(tmp_path)
    assert f"skipping checkpoint {newest}" in text and name in text
    assert "resumed from" in text and "step-0000002 at step 2" in text
    assert os.path.isdir(newest)  # written anew by the resumed run at step 3, the damaged one kept beside it:
    assert "renamed step-0000003.damaged should this run save that step again" in text
    assert sorted(os.listdir(newest + ".damaged")) == sorted(os.listdir(newest)) or how == "delete"
    with pytest.raises(DamagedCheckpoint, match=name):
        gen.training.checkpoint.verify_checkpoint(newest + ".damaged")
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path)][-1] == "step-0000004"


def test_resume_of_a_named_damaged_checkpoint_names_the_file(image_folder, tmp_path):
    run(image_folder, tmp_path, "--max-steps", "2")
    damage(os.path.join(tmp_path, "ckpt", "step-0000002", "optimizer.bin"), "truncate")
    with pytest.raises(DamagedCheckpoint, match=r"step-0000002/optimizer.bin is \d+ bytes, the manifest says"):
        run(image_folder, tmp_path, "--max-steps", "3", "--resume", os.path.join(tmp_path, "ckpt", "step-0000002"))


def test_resume_applies_a_new_learning_rate_and_says_so(image_folder, tmp_path):
    run(image_folder, tmp_path, "--max-steps", "2")
    run(image_folder, tmp_path, "--max-steps", "3", "--resume", "latest", "--lr", "3e-4")
    assert "resume: --lr 0.0003 applied (the run used 0.0001)" in log_text(tmp_path)
    optimizer = torch.load(os.path.join(tmp_path, "ckpt", "step-0000003", "optimizer.bin"), weights_only=True)
    assert [group["lr"] for group in optimizer["param_groups"]] == [3e-4]
    with open(os.path.join(tmp_path, "ckpt", "step-0000003", "training_state.json")) as file:
        assert json.load(file)["args"]["lr"] == 3e-4


def test_nan_stop_names_a_checkpoint_that_recovers(image_folder, tmp_path):
    run(image_folder, tmp_path, "--max-steps", "3")
    with pytest.raises(TrainingError) as stop:  # the learning rate blows the weights up within a few steps
        run(image_folder, tmp_path, "--max-steps", "20", "--resume", "latest", "--lr", "1e6")
    message = str(stop.value)
    named = message.split("continue with --resume ")[1].split(" ")[0]
    steps = [int(os.path.basename(p)[5:]) for p in list_checkpoints(tmp_path)]
    assert max(steps) > 3  # checkpoints were written after the blow-up began...
    assert int(os.path.basename(named)[5:]) <= 4  # ...but the one named predates it (weights of step <= 4)
    run(image_folder, tmp_path, "--max-steps", "6", "--resume", named, "--lr", "1e-4")  # the advice works
    losses = [json.loads(line)["loss"] for line in open(os.path.join(tmp_path, "log.jsonl"))]
    assert all(loss < 10 for loss in losses[-2:])


def test_a_nan_with_no_sane_checkpoint_says_start_again(image_folder, tmp_path):
    with pytest.raises(TrainingError, match="No checkpoint can recover .*start again in a new --results-dir"):
        run(image_folder, tmp_path, "--max-steps", "5", "--lr", "1e30")


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {root!r})
import gen.training.checkpoint as checkpoint
import train_sit

point, calls = {point!r}, []

def killer(real):
    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: half of it is on disk
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapped

setattr(checkpoint, point, killer(getattr(checkpoint, point)))
train_sit.main(sys.argv[1:])
"""


@pytest.mark.parametrize("point", ["save_pretrained", "write_manifest", "replace_folder"])
def test_kill_9_during_a_checkpoint_write_loses_nothing(image_folder, tmp_path, point):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(image_folder, straight, "--max-steps", "4")
    arguments = [*QUICK, "--data-path", image_folder, "--results-dir", str(killed), "--max-steps", "4"]
    script = KILL_SCRIPT.format(root=ROOT, point=point)
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script, *arguments], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    assert [os.path.basename(p) for p in list_checkpoints(killed)] == ["step-0000001"]
    run(image_folder, killed, "--max-steps", "4", "--resume", "latest")
    assert_same_weights(final_weights(straight), final_weights(killed))


def test_a_full_disk_during_a_checkpoint_says_so(image_folder, tmp_path, monkeypatch):
    import gen.training.checkpoint

    real_save, calls = gen.training.checkpoint.save_pretrained, []

    def disk_full_on_second_checkpoint(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", "ema.safetensors")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(gen.training.checkpoint, "save_pretrained", disk_full_on_second_checkpoint)
    with pytest.raises(TrainingError, match=r"checkpoint of step 2 not saved: no space left on the device .*"
                                            r"step-0000001 is intact"):
        run(image_folder, tmp_path, "--max-steps", "3")
