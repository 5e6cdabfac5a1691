"""The training loop through both scripts: latent and pixel paths, exact resumption, two processes,
unreadable images, NaN losses and checkpoints interrupted mid-write."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny import write_corrupt_image, write_image_folder

import extract_latents
import gen.training.checkpoint
import train_dit
import train_sit
from gen.data import CorruptImageError, LatentSetError
from gen.training import TrainingError
from gen.training.checkpoint import list_checkpoints
from gen.weights.export import load_pretrained

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"DiT": train_dit, "SiT": train_sit}
QUICK = ["--image-size", "16", "--num-classes", "3", "--global-batch-size", "4", "--num-workers", "0",
         "--log-every", "1", "--sample-every", "0", "--num-sampling-steps", "2", "--grid-columns", "2"]


def quick_args(family, results_dir, *extra, model_size="Mini/4-VCA"):
    ode = ["--sampling-method", "euler"] if family == "SiT" else ["--sampler", "ddim"]
    return ["--model", f"{family}-{model_size}", "--results-dir", str(results_dir), *QUICK, *ode, *extra]


def read_log(results_dir):
    with open(os.path.join(results_dir, "log.jsonl")) as file:
        return [json.loads(line) for line in file]


def final_checkpoint(results_dir):
    path = list_checkpoints(results_dir)[-1]
    return load_file(os.path.join(path, "model.safetensors")), load_file(os.path.join(path, "ema.safetensors"))


def initial_weights(family, input_size, in_channels):
    from gen.models import create_model

    torch.manual_seed(0)  # what the loop does before building the model (--global-seed 0)
    model = create_model(f"{family}-Mini/4-VCA", input_size=input_size, in_channels=in_channels, num_classes=3)
    return model.state_dict()


def assert_trained(results_dir, family, input_size, in_channels, steps):
    log = read_log(results_dir)
    assert [entry["step"] for entry in log] == list(range(1, steps + 1))
    assert all(math.isfinite(entry["loss"]) and entry["loss"] > 0 for entry in log)
    weights, ema = final_checkpoint(results_dir)
    start = initial_weights(family, input_size, in_channels)
    changed = [name for name, value in weights.items() if not torch.equal(value, start[name])]
    assert "final_layer.linear.weight" in changed and len(changed) >= 10  # adaLN-Zero: a few at first
    assert not torch.equal(ema["final_layer.linear.weight"], start["final_layer.linear.weight"])
    model = load_pretrained(os.path.join(results_dir, "model.safetensors"))
    assert model.config.in_channels == in_channels and model.config.input_size == input_size
    assert os.path.isfile(os.path.join(results_dir, "grid.png"))
    assert os.path.getsize(os.path.join(results_dir, "curves.png")) > 0


# -- both scripts, both data paths -------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["DiT", "SiT"])
def test_pixel_space_steps_train(family, image_folder, tmp_path):
    SCRIPTS[family].main(quick_args(family, tmp_path, "--data-path", image_folder, "--vae", "none",
                                    "--max-steps", "3", "--ckpt-every", "100"))
    assert_trained(str(tmp_path), family, 16, 3, steps=3)


@pytest.mark.parametrize("family", ["DiT", "SiT"])
def test_latent_steps_train_on_extracted_latents(family, image_folder, tiny_vae, tmp_path):
    latents = tmp_path / "latents"
    extract_latents.main(["--data-path", image_folder, "--output", str(latents), "--image-size", "16",
                          "--vae", tiny_vae, "--shard-size", "5", "--num-workers", "0", "--batch-size", "4"])
    results = tmp_path / "run"
    SCRIPTS[family].main(quick_args(family, results, "--latents", str(latents), "--vae", tiny_vae,
                                    "--max-steps", "3", "--ckpt-every", "100"))
    assert_trained(str(results), family, 8, 4, steps=3)
    with pytest.raises(LatentSetError, match="--vae"):  # latents of another VAE are refused
        SCRIPTS[family].main(quick_args(family, tmp_path / "other", "--latents", str(latents), "--vae", "none",
                                        "--max-steps", "3"))


def test_vae_on_the_fly_with_bf16_and_gradient_checkpointing_trains(image_folder, tiny_vae, tmp_path):
    train_dit.main(quick_args("DiT", tmp_path, "--data-path", image_folder, "--vae", tiny_vae, "--max-steps", "2",
                              "--ckpt-every", "100", "--mixed-precision", "bf16", "--gradient-checkpointing"))
    assert_trained(str(tmp_path), "DiT", 8, 4, steps=2)
    assert "mixed precision: bf16" in open(os.path.join(tmp_path, "log.txt")).read()


@pytest.mark.parametrize("kernels", ["auto", "torch", "triton"])
def test_vca_kernels_flag_reaches_every_vca_module(kernels, tmp_path):
    """The fused path itself is checked against the reference in tests/test_vca_fused.py (a model too)."""
    from gen.training.loop import build_model

    settings = train_dit.parse_args(quick_args("DiT", tmp_path, "--vca-kernels", kernels))
    model = build_model(settings, (3, 16, 16))
    assert {block.attn.kernels for block in model.blocks} == {kernels}


# -- resumption --------------------------------------------------------------------------------------------------
def test_resume_is_exact(image_folder, tmp_path):
    # 3 steps per epoch. The interrupted run stops at an epoch's end (step 3), mid-epoch (step 5), and then
    # goes back to the checkpoint of step 4 by path, replaying step 5; all of it must match one straight run.
    # Grids are drawn every 2 steps, after the checkpoints: they must not touch the training RNG.
    common = ("--data-path", image_folder, "--vae", "none", "--ckpt-every", "2", "--sample-every", "2")
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_sit.main(quick_args("SiT", straight, *common, "--max-steps", "7"))
    train_sit.main(quick_args("SiT", interrupted, *common, "--max-steps", "3"))
    train_sit.main(quick_args("SiT", interrupted, *common, "--max-steps", "5", "--resume", "latest"))
    train_sit.main(quick_args("SiT", interrupted, *common, "--max-steps", "7", "--resume",
                              os.path.join(interrupted, "ckpt", "step-0000004")))
    for expected, actual in zip(final_checkpoint(straight), final_checkpoint(interrupted), strict=True):
        assert expected.keys() == actual.keys()
        for name in expected:
            assert torch.equal(expected[name], actual[name]), name
    straight_losses = [(entry["step"], entry["loss"]) for entry in read_log(straight)]
    interrupted_losses = [(entry["step"], entry["loss"]) for entry in read_log(interrupted)]
    assert [step for step, _ in interrupted_losses] == [1, 2, 3, 4, 5, 5, 6, 7]
    assert interrupted_losses[4] == interrupted_losses[5]
    assert straight_losses == interrupted_losses[:5] + interrupted_losses[6:]
    assert sorted(os.listdir(straight / "samples")) == [f"step-000000{i}.png" for i in (2, 4, 6)]


def test_resume_needs_a_finished_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
        train_sit.main(quick_args("SiT", tmp_path, "--vae", "none", "--num-classes", "10", "--max-steps", "1",
                                  "--resume", "latest"))


# -- two processes -----------------------------------------------------------------------------------------------
def test_two_processes_share_the_global_batch(image_folder, tmp_path):
    # `accelerate launch --cpu` starts one process unless MPI is installed; torchrun-style launching
    # (--multi_gpu) with ACCELERATE_USE_CPU runs two gloo processes on a machine without GPUs
    command = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "0", os.path.join(ROOT, "train_sit.py"),
               *quick_args("SiT", tmp_path, "--data-path", image_folder, "--vae", "none", "--max-steps", "2",
                           "--ckpt-every", "100")]
    environment = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 4 = 2 processes x 2" in done.stdout
    log = read_log(tmp_path)
    assert [entry["batch_per_process"] for entry in log] == [[2, 2], [2, 2]]
    assert all(math.isfinite(entry["loss"]) for entry in log)
    assert len(list_checkpoints(tmp_path)) == 1
    assert sorted(os.listdir(list_checkpoints(tmp_path)[0])).count("random_states_1.pkl") == 1


# -- failures ----------------------------------------------------------------------------------------------------
def test_unreadable_image_is_skipped_and_counted_or_stops_a_strict_run(tmp_path):
    root = write_image_folder(tmp_path / "images")
    broken = write_corrupt_image(root)  # 13 images: 3 full batches of 4 cover 12 of them
    run = tmp_path / "run"
    train_sit.main(quick_args("SiT", run, "--data-path", root, "--vae", "none", "--max-steps", "6",
                              "--ckpt-every", "100", "--num-workers", "2"))  # skipped in worker processes
    log = read_log(run)
    assert log[-1]["skipped_images"] >= 1 and len(log) == 6
    assert 4 * 6 - sum(entry["batch_per_process"][0] for entry in log) == log[-1]["skipped_images"]
    with open(os.path.join(run, "log.txt")) as file:
        assert f"skipped unreadable image {broken}" in file.read()
    with pytest.raises(CorruptImageError, match="broken.png"):
        train_sit.main(quick_args("SiT", tmp_path / "strict", "--data-path", root, "--vae", "none",
                                  "--max-steps", "6", "--strict", "--num-workers", "2"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(image_folder, tmp_path):
    # an absurd learning rate: the first step is finite, its update overflows the next forward pass
    with pytest.raises(TrainingError, match="loss became (nan|inf) between steps 2 and 2"):
        train_dit.main(quick_args("DiT", tmp_path, "--data-path", image_folder, "--vae", "none", "--lr", "1e30",
                                  "--max-steps", "5", "--ckpt-every", "1"))
    assert [os.path.basename(path) for path in list_checkpoints(tmp_path)] == ["step-0000001"]
    assert not os.path.exists(os.path.join(tmp_path, "ckpt", "step-0000002.tmp"))
    model = load_pretrained(list_checkpoints(tmp_path)[-1])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_interrupted_mid_write_leaves_the_previous_one(image_folder, tmp_path, monkeypatch):
    real_save, calls = gen.training.checkpoint.save_pretrained, []

    def crash_on_second_checkpoint(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed while writing the EMA")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(gen.training.checkpoint, "save_pretrained", crash_on_second_checkpoint)
    common = quick_args("SiT", tmp_path, "--data-path", image_folder, "--vae", "none", "--ckpt-every", "1")
    with pytest.raises(KeyboardInterrupt):
        train_sit.main([*common, "--max-steps", "3"])
    assert os.path.isdir(os.path.join(tmp_path, "ckpt", "step-0000002.tmp"))  # the half-written one
    assert list_checkpoints(tmp_path) == [os.path.join(tmp_path, "ckpt", "step-0000001")]
    load_pretrained(list_checkpoints(tmp_path)[-1])
    monkeypatch.setattr(gen.training.checkpoint, "save_pretrained", real_save)
    train_sit.main([*common, "--max-steps", "3", "--resume", "latest"])
    names = sorted(name for name in os.listdir(os.path.join(tmp_path, "ckpt")) if name.startswith("step-"))
    assert names == ["step-0000001", "step-0000002", "step-0000003"]
    assert "resumed from" in open(os.path.join(tmp_path, "log.txt")).read()
