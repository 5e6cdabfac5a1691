"""Sampling: guidance, samplers, grids, and N-sample runs that do not depend on processes, batches or resuming."""
import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import perturbed

import sample
from common.cli import parse_with_config
from common.errors import UserError
from gen import save_pretrained
from gen.family import make_sampler
from gen.sampling import generate_latents
from gen.sampling.grid import GRID_GAP, GRID_MIN_SIDE
from gen.settings import DIFFUSION_DEFAULTS, TRANSPORT_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Pixel-space (8x8 RGB) DiT and SiT exports, and a latent DiT for the tiny VAE."""
    folder = tmp_path_factory.mktemp("exports")
    return {
        "DiT": str(save_pretrained(perturbed("DiT-Mini/2", in_channels=3), folder / "dit.safetensors")),
        "SiT": str(save_pretrained(perturbed("SiT-Mini/2", in_channels=3), folder / "sit.safetensors")),
        "latent DiT": str(save_pretrained(perturbed("DiT-Mini/2", in_channels=4), folder / "ldit.safetensors")),
        "VCA DiT": str(save_pretrained(perturbed("DiT-Mini/2-VCA", in_channels=3), folder / "vdit.safetensors")),
    }


def run(*argv):
    """sample.py in this process (one process, no launch cost)."""
    sample.main([str(arg) for arg in argv])


def error_lines(result) -> list[str]:
    """Every rank's one-line refusal (common.cli prints it as `error: ...`)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def launch_two_processes(*argv, check=True):
    """sample.py on 2 CPU processes: accelerate's torchrun launcher with its CPU switch (gloo)."""
    with socket.socket() as probe:  # a free port, so concurrent runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), "sample.py", *map(str, argv)]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if not check:
        return result
    assert result.returncode == 0, "\n".join(error_lines(result)) + "\n" + result.stderr[-4000:]
    assert "on 2 processes" in result.stdout + result.stderr


def load_npz(folder):
    with np.load(Path(folder) / "samples.npz") as data:
        return {key: data[key] for key in data.files}


# -- N-sample mode ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, sampler_flags", [
    ("DiT", ["--sampler", "ddim"]),
    ("DiT", ["--sampler", "ddpm"]),  # stochastic: every step's noise from the image's own generator
    ("SiT", ["--mode", "ODE", "--sampling-method", "euler"]),
    ("SiT", ["--mode", "SDE"]),  # stochastic
])
def test_samples_do_not_depend_on_processes_batches_or_resuming(tmp_path, exports, family, sampler_flags):
    common = ["--ckpt", exports[family], "--vae", "none", "--num-sampling-steps", 5, "--num-fid-samples", 16,
              "--cfg-scale", 1.5, *sampler_flags]
    run(*common, "--per-proc-batch-size", 16, "--sample-dir", tmp_path / "one")
    launch_two_processes(*common, "--per-proc-batch-size", 3, "--sample-dir", tmp_path / "two")
    one, two = load_npz(tmp_path / "one"), load_npz(tmp_path / "two")
    assert sorted(one) == ["arr_0", "arr_1"]
    assert one["arr_0"].dtype == np.uint8 and one["arr_0"].shape == (16, 8, 8, 3)
    assert one["arr_1"].shape == (16,) and set(one["arr_1"]) <= set(range(NUM_CLASSES))
    assert len({image.tobytes() for image in one["arr_0"]}) == 16  # sixteen different images
    np.testing.assert_array_equal(two["arr_0"], one["arr_0"])
    np.testing.assert_array_equal(two["arr_1"], one["arr_1"])

    # A run stopped half-way: some images missing, no samples.npz; the rerun makes only what is missing.
    for index in range(5, 16, 2):
        (tmp_path / "two" / f"{index:06d}.png").unlink()
    (tmp_path / "two" / "samples.npz").unlink()
    kept = (tmp_path / "two" / "000000.png").stat().st_mtime_ns
    run(*common, "--per-proc-batch-size", 4, "--sample-dir", tmp_path / "two")
    assert (tmp_path / "two" / "000000.png").stat().st_mtime_ns == kept
    np.testing.assert_array_equal(load_npz(tmp_path / "two")["arr_0"], one["arr_0"])


def test_two_processes_refuse_a_folder_of_someone_elses_files_alike(tmp_path, exports):
    (tmp_path / "photo.jpg").write_bytes(b"not ours")
    result = launch_two_processes("--ckpt", exports["DiT"], "--vae", "none", "--num-sampling-steps", 2,
                                  "--num-fid-samples", 4, "--sample-dir", tmp_path, check=False)
    reasons = error_lines(result)
    assert result.returncode != 0 and len(reasons) == 2 and "photo.jpg" in reasons[0], result.stderr[-3000:]
    assert "Connection closed" not in result.stderr  # no process left waiting for one that quit
    assert sorted(os.listdir(tmp_path)) == ["photo.jpg"]


def test_a_settings_record_cut_short_by_kill_9_does_not_refuse_the_folder(tmp_path, exports):
    (tmp_path / "sample_settings.json.tmp-12345").write_text('{"seed"')  # the write a kill -9 stopped
    run("--ckpt", exports["DiT"], "--vae", "none", "--num-sampling-steps", 2, "--num-fid-samples", 4,
        "--sample-dir", tmp_path)
    assert load_npz(tmp_path)["arr_0"].shape == (4, 8, 8, 3)


def test_balanced_classes_and_refusal_to_mix_settings(tmp_path, exports):
    common = ["--ckpt", exports["DiT"], "--vae", "none", "--sampler", "ddim", "--num-sampling-steps", 3,
              "--num-fid-samples", 12, "--sample-dir", tmp_path]
    run(*common, "--class-order", "balanced")
    np.testing.assert_array_equal(load_npz(tmp_path)["arr_1"], np.arange(12) % NUM_CLASSES)
    with pytest.raises(UserError, match="other settings"):
        run(*common, "--class-order", "random")


def test_vae_folder_decodes_and_stays_batch_independent(tmp_path, exports, tiny_vae):
    common = ["--ckpt", exports["latent DiT"], "--vae", tiny_vae, "--sampler", "dpm-solver",
              "--num-sampling-steps", 4, "--num-fid-samples", 5]
    run(*common, "--per-proc-batch-size", 5, "--sample-dir", tmp_path / "a")
    run(*common, "--per-proc-batch-size", 2, "--sample-dir", tmp_path / "b")
    a, b = load_npz(tmp_path / "a"), load_npz(tmp_path / "b")
    assert a["arr_0"].shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])


# -- grid mode -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, sampler_flags", [
    ("DiT", ["--sampler", "ddpm"]), ("DiT", ["--sampler", "dpm-solver"]),
    ("SiT", ["--mode", "ODE"]), ("SiT", ["--mode", "SDE", "--last-step", "Tweedie"]),
])
def test_grid_is_a_png_of_the_right_size(tmp_path, exports, family, sampler_flags):
    output = tmp_path / "grid.png"
    run("--ckpt", exports[family], "--vae", "none", "--num-sampling-steps", 4, "--class-labels", 1, 2, 3, 4, 5, 6,
        "--output", output, *sampler_flags)
    side = GRID_MIN_SIDE  # 8-pixel images are enlarged 8 times
    assert Image.open(output).size == (4 * (side + GRID_GAP) + GRID_GAP, 2 * (side + GRID_GAP) + GRID_GAP)


def test_grid_through_the_fused_vca_kernels_matches_the_torch_ones(tmp_path, exports):
    common = ["--ckpt", exports["VCA DiT"], "--vae", "none", "--sampler", "ddim", "--num-sampling-steps", 2,
              "--class-labels", 1, 2, "--precision", "fp32"]
    for kernels in ("triton", "torch"):  # Triton through its interpreter on the CPU
        run(*common, "--output", tmp_path / f"{kernels}.png", "--vca-kernels", kernels)
    fused, reference = (np.asarray(Image.open(tmp_path / f"{name}.png"), np.int16) for name in ("triton", "torch"))
    assert np.abs(fused - reference).max() <= 1 and reference.std() > 10  # float rounding may move a level


def test_grid_rows_can_carry_their_class_ids(tmp_path, exports):
    common = ["--ckpt", exports["DiT"], "--vae", "none", "--num-sampling-steps", 2, "--class-labels", 1, 2, 3, 4, 5]
    run(*common, "--output", tmp_path / "plain.png")
    run(*common, "--output", tmp_path / "labelled.png", "--label-rows")
    plain, labelled = Image.open(tmp_path / "plain.png"), Image.open(tmp_path / "labelled.png")
    assert labelled.size[1] == plain.size[1] and labelled.size[0] > plain.size[0]  # a margin for "1 2 3 4", "5"


def test_the_default_grid_is_a_labelled_row_per_class_as_training_draws_it(tmp_path, exports):
    from sample import default_labels, row_label

    assert default_labels(3, 4) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2] and row_label([2, 2, 2]) == "2"
    run("--ckpt", exports["DiT"], "--vae", "none", "--num-sampling-steps", 2, "--nrow", 2,
        "--output", tmp_path / "default.png")
    run("--ckpt", exports["DiT"], "--vae", "none", "--num-sampling-steps", 2, "--nrow", 2, "--class-labels",
        *range(10), "--output", tmp_path / "plain.png")
    default, plain = Image.open(tmp_path / "default.png"), Image.open(tmp_path / "plain.png")
    rows = 10  # the model's 10 classes, 2 images each
    assert default.size[1] == rows * (GRID_MIN_SIDE + GRID_GAP) + GRID_GAP and default.size[0] > plain.size[0]


def test_grid_through_a_vae_folder_and_a_config_file(tmp_path, exports, tiny_vae):
    config = tmp_path / "grid.yaml"
    config.write_text(f"ckpt: {exports['latent DiT']}\nvae: {tiny_vae}\nnum-sampling-steps: 3\nnrow: 2\n"
                      f"class_labels: [1, 2, 3, 4]\nsampler: ddim\n")
    run("--config", config, "--output", tmp_path / "grid.png")
    assert Image.open(tmp_path / "grid.png").size == (2 * (GRID_MIN_SIDE + GRID_GAP) + GRID_GAP,) * 2


# -- the library -----------------------------------------------------------------------------------------
def test_guidance_doubles_the_batch_with_the_null_class():
    model = perturbed("DiT-Mini/2", in_channels=3)
    calls = []

    def recording_forward_with_cfg(x, t, y, cfg_scale):
        calls.append((x, y, cfg_scale))
        return type(model).forward_with_cfg(model, x, t, y, cfg_scale)

    model.forward_with_cfg = recording_forward_with_cfg
    noise, labels = torch.randn(3, 3, 8, 8), torch.tensor([1, 2, 3])
    stats = {}
    guided = generate_latents(model, labels, noise, make_sampler("DiT", "ddim", 2), cfg_scale=4.0, stats=stats)
    x, y, scale = calls[0]
    assert (stats["batches"], stats["model_evaluations"], list(stats["seconds"])) == (1, 2, ["network"])
    assert scale == 4.0 and guided.shape == noise.shape
    assert torch.equal(x[:3], x[3:]) and torch.equal(x[:3], noise)
    assert y.tolist() == [1, 2, 3] + [NUM_CLASSES] * 3
    unguided = generate_latents(model, labels, noise, make_sampler("DiT", "ddim", 2), cfg_scale=1.0)
    assert len(calls) == 2 and not torch.allclose(guided, unguided)


def test_dpm_solver_follows_the_ddim_trajectory_in_fewer_evaluations():
    model = perturbed("DiT-Mini/2", in_channels=3)
    noise, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    stats = {}
    fast = generate_latents(model, labels, noise, make_sampler("DiT", "dpm-solver", 20), stats=stats)
    reference = generate_latents(model, labels, noise, make_sampler("DiT", "ddim", 250))
    assert stats["model_evaluations"] == 20
    assert (fast - reference).abs().mean() < 0.05 * reference.abs().mean()


def test_config_file_sets_defaults_and_flags_win(tmp_path, capsys):
    def parser():
        p = argparse.ArgumentParser()
        p.add_argument("--ckpt", required=True)
        p.add_argument("--cfg-scale", type=float, default=1.0)
        p.add_argument("--mode", choices=["ODE", "SDE"], default="ODE")
        return p

    config = tmp_path / "c.yaml"
    config.write_text("ckpt: a.safetensors\ncfg-scale: 4.0\nmode: SDE\n")
    args = parse_with_config(parser(), ["--config", str(config), "--cfg-scale", "2"])
    assert (args.ckpt, args.cfg_scale, args.mode) == ("a.safetensors", 2.0, "SDE")
    config.write_text("ckpt: a\nbogus_key: 1\n")
    with pytest.raises(SystemExit):
        parse_with_config(parser(), ["--config", str(config)])
    assert "unknown key(s) ['bogus_key']" in capsys.readouterr().err
    config.write_text("ckpt: a\nmode: PDE\n")
    with pytest.raises(SystemExit):
        parse_with_config(parser(), ["--config", str(config)])
    assert 'mode = "PDE" is not one of' in capsys.readouterr().err


# -- weights that say how to sample them -----------------------------------------------------------------------
def test_a_pixel_model_samples_from_its_file_alone(tmp_path, monkeypatch):
    process = dict(TRANSPORT_DEFAULTS, path_type="GVP")
    model = perturbed("SiT-Mini/2", in_channels=3)
    path = save_pretrained(model, tmp_path / "gvp.safetensors", vae="none", process=process)
    monkeypatch.chdir(tmp_path)
    run("--ckpt", path)  # no --vae none, no --path-type GVP: the file says both
    width, height = Image.open(tmp_path / "sample.png").size  # a labelled row of 4 for each class
    assert height == NUM_CLASSES * (GRID_MIN_SIDE + GRID_GAP) + GRID_GAP
    assert width > 4 * (GRID_MIN_SIDE + GRID_GAP) + GRID_GAP
    run("SDE", "--ckpt", path, "--num-sampling-steps", 3, "--output", tmp_path / "sde.png")  # SiT's positional mode
    assert (tmp_path / "sde.png").is_file()
    with pytest.raises(UserError, match="--vae ema contradicts .* trained with --vae none"):
        run("--ckpt", path, "--vae", "ema")
    with pytest.raises(UserError, match="--path-type Linear contradicts .* trained with GVP"):
        run("--ckpt", path, "--path-type", "Linear")


def test_dit_diffusion_settings_come_from_the_file(tmp_path):
    process = dict(DIFFUSION_DEFAULTS, predict_xstart=True, noise_schedule="cosine")
    model = perturbed("DiT-Mini/2", in_channels=3)
    path = save_pretrained(model, tmp_path / "x0.safetensors", vae="none", process=process)
    common = ["--ckpt", path, "--sampler", "ddim", "--num-sampling-steps", 4, "--num-fid-samples", 4]
    run(*common, "--sample-dir", tmp_path / "from_file")
    run(*common, "--sample-dir", tmp_path / "flags", "--predict-xstart", "--noise-schedule", "cosine")
    from_file, flags = load_npz(tmp_path / "from_file")["arr_0"], load_npz(tmp_path / "flags")["arr_0"]
    np.testing.assert_array_equal(from_file, flags)  # agreeing flags change nothing
    with pytest.raises(UserError, match="--predict-xstart False contradicts"):
        run(*common, "--sample-dir", tmp_path / "bad", "--no-predict-xstart")


def read_sample_settings(folder) -> dict:
    with open(Path(folder) / "sample_settings.json") as handle:
        return json.load(handle)


@pytest.mark.parametrize("family, record, other_family_keys", [
    ("SiT", dict(mode="ODE", sampling_method="euler", atol=1e-6, rtol=1e-3, reverse=False, diffusion_form="sigma",
                 diffusion_norm=1.0, last_step="Mean", last_step_size=0.04), ["sampler", "ddim_eta", "noise_schedule"]),
    ("DiT", dict(sampler="ddim", ddim_eta=0.0), ["mode", "sampling_method", "path_type", "atol"]),
])
def test_sample_defaults_to_the_sampler_training_recorded(tmp_path, monkeypatch, family, record, other_family_keys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    record = dict(record, num_sampling_steps=3, cfg_scale=1.4)
    process = TRANSPORT_DEFAULTS if family == "SiT" else dict(DIFFUSION_DEFAULTS, learn_sigma=True)
    path = save_pretrained(perturbed(f"{family}-Mini/2", in_channels=3), tmp_path / "m.safetensors", vae="none",
                           process=process, sampler=record)
    common = ["--ckpt", path, "--num-fid-samples", 3, "--class-order", "balanced"]
    run(*common, "--sample-dir", tmp_path / "recorded")
    used = read_sample_settings(tmp_path / "recorded")
    assert {key: used[key] for key in record} == record  # not dopri5 / ddpm, 250 steps, guidance 1.5
    assert used["model"] == f"{family}-Mini/2" and used["vae"] == "none" and used["num_classes"] == NUM_CLASSES
    assert not set(other_family_keys) & set(used)
    flags = [f"--{key.replace('_', '-')}" for key in ("num_sampling_steps", "cfg_scale")]
    kind = ["--mode", "ODE", "--sampling-method", "euler"] if family == "SiT" else ["--sampler", "ddim"]
    run(*common, "--sample-dir", tmp_path / "flags", flags[0], 3, flags[1], 1.4, *kind)
    np.testing.assert_array_equal(load_npz(tmp_path / "recorded")["arr_0"], load_npz(tmp_path / "flags")["arr_0"])
    run(*common, "--sample-dir", tmp_path / "given", "--num-sampling-steps", 2, "--cfg-scale", 1.0)
    assert (read_sample_settings(tmp_path / "given")["num_sampling_steps"],
            read_sample_settings(tmp_path / "given")["cfg_scale"]) == (2, 1.0)  # flags win over the record


def test_another_sampler_than_the_recorded_one_keeps_its_own_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    record = dict(mode="ODE", sampling_method="euler", num_sampling_steps=3, cfg_scale=1.4)
    path = save_pretrained(perturbed("SiT-Mini/2", in_channels=3), tmp_path / "m.safetensors", vae="none",
                           process=TRANSPORT_DEFAULTS, sampler=record)
    run("SDE", "--ckpt", path, "--num-fid-samples", 2, "--sample-dir", tmp_path / "sde")
    used = read_sample_settings(tmp_path / "sde")
    assert (used["mode"], used["sampling_method"], used["num_sampling_steps"]) == ("SDE", None, 3)


def test_an_rgb_export_without_a_vae_record_samples_offline(tmp_path, exports, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt of the SD-VAE would fail
    run("--ckpt", exports["DiT"], "--sampler", "ddim", "--num-sampling-steps", 2, "--class-labels", 0, 1,
        "--output", tmp_path / "pixels.png")
    assert (tmp_path / "pixels.png").is_file()
