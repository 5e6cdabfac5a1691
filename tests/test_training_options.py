"""The habits DiT, SiT, fast-DiT and diffusers users bring: gradient accumulation, starting from weights,
checkpoint retention, tensorboard and a progress bar."""
import glob
import json
import os
import re
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from tiny import perturbed

import train_sit
from gen import save_pretrained
from gen.settings import DIGITS_IMAGE_SIZE, DataSettings
from gen.settings import data as data_settings
from gen.training.checkpoint import list_checkpoints
from gen.training.loop import forward_backward
from gen.training.schedule import learning_rate
from gen.weights.export import CheckpointError, load_pretrained, read_settings

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
QUICK = ["--model", "SiT-Mini/4", "--image-size", "16", "--num-classes", "3", "--global-batch-size", "4",
         "--num-workers", "0", "--vae", "none", "--log-every", "1", "--sample-every", "0",
         "--num-sampling-steps", "2", "--sampling-method", "euler", "--log-with", "none"]


def run(image_folder, results_dir, *extra):
    train_sit.main([*QUICK, "--data-path", image_folder, "--results-dir", str(results_dir), *extra])


def test_accumulated_micro_batches_give_the_gradients_of_the_whole_batch():
    model = perturbed("SiT-Mini/4", input_size=16, in_channels=3, num_classes=3)  # eval: no label dropout draws
    x, y, t = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2]), torch.linspace(0.1, 0.9, 6)

    gradients, losses = [], []
    for pieces in (1, 2, 3):
        model.zero_grad()
        run_state = SimpleNamespace(settings=SimpleNamespace(grad_accum_steps=pieces), accelerator=Accelerator(),
                                    model=model, loss_fn=per_piece_loss(t, pieces))
        losses.append(forward_backward(run_state, x, y))
        gradients.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for other in (1, 2):
        torch.testing.assert_close(losses[other], losses[0], rtol=1e-6, atol=1e-7)
        for a, b in zip(gradients[0], gradients[other], strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert sum(float(g.abs().sum()) for g in gradients[0]) > 0


def per_piece_loss(t, pieces):
    """A deterministic per-sample loss whose timesteps follow the micro-batches, as a draw per sample would."""
    chunks = iter(t.tensor_split(pieces))

    def piece_loss(model, x, y):
        times = next(chunks)
        return (model(x, times, y) - x).square().mean((1, 2, 3))

    return piece_loss


def test_grad_accumulation_trains_end_to_end(image_folder, tmp_path):
    run(image_folder, tmp_path, "--max-steps", "2", "--ckpt-every", "2", "--grad-accum-steps", "2")
    assert os.path.isfile(tmp_path / "model.safetensors")


def test_init_from_an_export_starts_from_its_weights(image_folder, tmp_path):
    run(image_folder, tmp_path / "first", "--max-steps", "2", "--ckpt-every", "2")
    export = tmp_path / "first" / "model.safetensors"
    run(image_folder, tmp_path / "second", "--max-steps", "1", "--ckpt-every", "1", "--lr", "1e-12",
        "--ema-decay", "1.0", "--init-from", str(export))
    start, ema = load_file(export), load_file(tmp_path / "second" / "model.safetensors")
    assert all(torch.equal(ema[name], start[name]) for name in start)  # EMA decay 1: the initial weights
    weights = load_file(os.path.join(list_checkpoints(tmp_path / "second")[-1], "model.safetensors"))
    assert all(torch.allclose(weights[name], start[name], atol=1e-9) for name in start)  # lr 1e-12: barely moved
    assert "initialised SiT-Mini/4 from" in open(tmp_path / "second" / "log.txt").read()


def test_init_from_an_official_pt_and_a_model_that_does_not_fit(image_folder, tmp_path):
    model = perturbed("SiT-Mini/4", input_size=16, in_channels=3, num_classes=3)
    torch.save({"ema": model.state_dict(), "args": None}, tmp_path / "SiT-official.pt")
    run(image_folder, tmp_path / "ok", "--max-steps", "1", "--ckpt-every", "1", "--init-from",
        str(tmp_path / "SiT-official.pt"))
    other = save_pretrained(perturbed("SiT-Mini/2", input_size=16, in_channels=3, num_classes=3),
                            tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="does not fit SiT-Mini/4"):
        run(image_folder, tmp_path / "bad", "--max-steps", "1", "--init-from", other)


def test_checkpoints_total_limit_keeps_the_newest(image_folder, tmp_path):
    run(image_folder, tmp_path, "--max-steps", "4", "--ckpt-every", "1", "--checkpoints-total-limit", "2")
    assert [os.path.basename(path) for path in list_checkpoints(tmp_path)] == ["step-0000003", "step-0000004"]
    assert "deleted checkpoint" in open(tmp_path / "log.txt").read()
    run(image_folder, tmp_path, "--max-steps", "5", "--ckpt-every", "1", "--checkpoints-total-limit", "2",
        "--resume", "latest")
    assert [os.path.basename(path) for path in list_checkpoints(tmp_path)] == ["step-0000004", "step-0000005"]


def test_tensorboard_logs_the_run(image_folder, tmp_path):
    run(image_folder, tmp_path, "--max-steps", "2", "--ckpt-every", "2", "--log-with", "tensorboard",
        "--sample-every", "1", "--lr", "3e-4")
    events = glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True)
    assert events and os.path.getsize(events[0]) > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(os.path.dirname(events[0]))
    accumulator.Reload()
    assert "loss" in accumulator.Tags()["scalars"]
    assert [event.step for event in accumulator.Scalars("loss")] == [1, 2]
    assert [event.value for event in accumulator.Scalars("lr")] == pytest.approx([3e-4, 3e-4])
    grids = accumulator.Images("samples")  # each step's grid (--sample-every 1) and the final one
    assert [event.step for event in grids] == [1, 2, 2] and grids[0].width > grids[0].height > 0


def test_progress_bar_on_request(image_folder, tmp_path, capsys):
    run(image_folder, tmp_path / "quiet", "--max-steps", "2", "--ckpt-every", "2")
    assert "training" not in capsys.readouterr().err  # not a terminal: no bar unless asked
    run(image_folder, tmp_path / "bar", "--max-steps", "2", "--ckpt-every", "2", "--progress-bar")
    captured = capsys.readouterr()
    assert "training: 100%" in captured.err
    assert "step 0000001 loss=" in captured.out and re.search(r"\r {20,}\r", captured.err)  # bar cleared for it


def test_the_digits_train_at_their_own_size_with_no_workers(tmp_path):
    train_sit.main(["--model", "SiT-Mini/4", "--vae", "none", "--num-classes", "10", "--global-batch-size", "4",
                    "--max-steps", "1", "--ckpt-every", "1", "--sample-every", "0", "--num-sampling-steps", "2",
                    "--sampling-method", "euler", "--cfg-scale", "1.5", "--log-with", "none",
                    "--results-dir", str(tmp_path)])
    with open(tmp_path / "args.json") as handle:
        args = json.load(handle)
    assert (args["image_size"], args["num_workers"]) == (DIGITS_IMAGE_SIZE, 0)  # not 256 px, 4 workers
    assert args["precision"] == "fp32"  # --precision auto, resolved for the CPU: what grids and samples used
    export = tmp_path / "model.safetensors"
    assert load_pretrained(export).config.input_size == DIGITS_IMAGE_SIZE  # pixels: no VAE
    assert read_settings(export)["sampler"] == dict(num_sampling_steps=2, cfg_scale=1.5, guidance_low=0.0,
                                                    guidance_high=1.0, mode="ODE", sampling_method="euler",
                                                    atol=1e-6, rtol=1e-3, reverse=False, diffusion_form="sigma",
                                                    diffusion_norm=1.0, last_step="Mean", last_step_size=0.04,
                                                    time_shift=0.0)


@pytest.mark.parametrize("data_path, given, expected", [
    (None, None, (16, 0)),             # the built-in digits: their size, in memory
    ("images", None, (256, 2)),        # an image folder: DiT's size, workers up to the CPUs
    ("images", 1, (256, 1)),
    ("images", 8, (256, 2)),           # more than the CPUs: capped
])
def test_data_defaults_and_workers_capped_at_the_cpus(monkeypatch, data_path, given, expected):
    monkeypatch.setattr(data_settings, "available_cpus", lambda: 2)
    settings = DataSettings(data_path=data_path, num_workers=given)
    notes = settings.fill_defaults()
    assert (settings.image_size, settings.num_workers) == expected
    assert bool(notes) == (given == 8)


def test_warmup_raises_the_rate_linearly_and_a_resume_continues_it(image_folder, tmp_path):
    rates = [learning_rate(step, 1e-3, 4) for step in range(6)]
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate(0, 1e-3) == 1e-3  # no warm-up: DiT's constant rate from the first step
    run(image_folder, tmp_path, "--max-steps", "2", "--ckpt-every", "2", "--lr", "1e-3", "--warmup-steps", "4")
    run(image_folder, tmp_path, "--max-steps", "5", "--ckpt-every", "5", "--lr", "1e-3", "--warmup-steps", "4",
        "--resume", "latest")
    with open(tmp_path / "log.jsonl") as handle:
        rates = [row["lr"] for row in map(json.loads, handle) if "lr" in row]
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])  # steps 1-2, then 3-5 after the resume
