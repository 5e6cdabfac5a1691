"""The study command: runs x seeds at one budget, finished runs kept, interrupted ones resumed, a report."""
import json
import os

import pytest
import yaml

from common.cli import ArgumentParser
from common.errors import UserError
from gen import study as study_module
from gen.models.zoo import model_config
from gen.settings.flags import add_training_flags


@pytest.fixture
def study_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FID_CACHE_DIR", str(tmp_path / "fid-cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    study = {"name": "tiny", "report_dir": str(tmp_path / "report"), "models": ["SiT-Mini/4", "SiT-Mini/4-VCA"],
             "seeds": [0], "shared": {"image_size": 16, "num_classes": 10, "vae": "none", "random_flip": False,
                                      "global_batch_size": 16, "max_steps": 3, "ckpt_every": 1, "log_every": 1,
                                      "sample_every": 0, "num_workers": 0, "num_sampling_steps": 3,
                                      "eval_every": 1, "eval_samples": 10, "log_with": "none"}, "noise_floor_seeds": 2,
             "family": {"SiT": {"mode": "ODE", "sampling_method": "euler"}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_study_trains_every_run_once_and_reports_the_difference(study_file, capsys):
    study_module.main([str(study_file)])
    report_dir = study_file.parent / "report"
    report = json.loads((report_dir / "report.json").read_text())
    assert set(report["models"]) == {"SiT-Mini/4", "SiT-Mini/4-VCA"}
    difference = report["vca_minus_mhsa_fid"]["SiT-Mini/4-VCA"]
    vca_fid = report["models"]["SiT-Mini/4-VCA"]["seeds"]["0"]["final"]["fid"]
    mhsa_fid = report["models"]["SiT-Mini/4"]["seeds"]["0"]["final"]["fid"]
    assert difference["twin"] == "SiT-Mini/4" and difference["mean"] == pytest.approx(vca_fid - mhsa_fid)
    markdown = (report_dir / "report.md").read_text()
    assert "| SiT-Mini/4-VCA | SiT-Mini/4 |" in markdown
    # the same step, time and FLOPs: one seed gives no interval, so no side can win
    equal = report["vca_minus_mhsa_at_equal_budget"]["SiT-Mini/4-VCA"]
    assert set(equal) == {"twin", "step", "train_seconds", "train_flops"}
    assert equal["step"]["at"] == 3 and equal["step"]["mean"] == pytest.approx(vca_fid - mhsa_fid)
    assert equal["train_flops"]["at"] > 0 and equal["train_flops"]["method"] == "one seed: no interval"
    for budget in ("step", "train_seconds", "train_flops"):  # times: the twins' evaluations may not overlap
        assert equal[budget]["verdict"] == "not separable"
        assert equal[budget]["method"] == "one seed: no interval" or equal[budget]["at"] is None
    for kind in ("the same step", "the same training time", "the same FLOPs"):
        assert f"| SiT-Mini/4-VCA | SiT-Mini/4 | {kind} |" in markdown
    floor = report["noise_floor"]
    assert len(floor["fids"]) == 2 and floor["std"] >= 0 and floor["run"].endswith("SiT-Mini-4-seed0")
    assert "noise floor: " in markdown and "fid_by_budget.png" in report["pictures"].values()
    for picture in report["pictures"].values():
        assert os.path.getsize(report_dir / picture) > 0
    assert "attention SiT-Mini/4-VCA" in report["pictures"]

    # a finished run is not repeated; an interrupted one (no export yet, a checkpoint) resumes
    os.remove(report_dir / "runs" / "SiT-Mini-4-VCA-seed0" / "model.safetensors")
    capsys.readouterr()
    study_module.main([str(study_file)])
    out = capsys.readouterr().out
    assert "SiT-Mini/4 seed 0 is finished" in out and "training SiT-Mini/4-VCA seed 0" in out
    log = (report_dir / "runs" / "SiT-Mini-4-VCA-seed0" / "log.txt").read_text()
    assert "resumed from" in log


def test_arms_train_once_each_two_at_a_time_and_are_compared_with_the_first(study_file):
    study = yaml.safe_load(study_file.read_text())
    study.update(models=["SiT-Mini/4"], noise_floor_seeds=0, jobs=2,
                 arms={"vanilla": {}, "lognormal+cos": {"weighting": "lognormal", "cos_loss": True}})
    study_file.write_text(yaml.safe_dump(study, sort_keys=False))  # the first arm is the baseline
    study_module.main([str(study_file)])
    report_dir = study_file.parent / "report"
    for arm in ("vanilla", "lognormal+cos"):
        run = report_dir / arm / "runs" / "SiT-Mini-4-seed0"
        assert (run / "model.safetensors").is_file() and (report_dir / arm / "report.md").is_file()
        assert "study: training" not in (run.parent / "SiT-Mini-4-seed0.out").read_text()  # the child's console
    arguments = json.loads((report_dir / "lognormal+cos" / "runs" / "SiT-Mini-4-seed0" / "args.json").read_text())
    assert arguments["weighting"] == "lognormal" and arguments["cos_loss"] is True
    report = json.loads((report_dir / "report.json").read_text())
    compared = report["arm_minus_baseline"]["SiT-Mini/4"]["lognormal+cos"]["step"]
    finals = report["final_fid"]
    assert compared["at"] == 3 and compared["mean"] == pytest.approx(
        finals["lognormal+cos"]["SiT-Mini/4"]["0"] - finals["vanilla"]["SiT-Mini/4"]["0"])
    markdown = (report_dir / "report.md").read_text()
    assert "| SiT-Mini/4 | lognormal+cos | the same step | step 3 |" in markdown
    assert "- `lognormal+cos`: `weighting: lognormal`, `cos_loss: True`" in markdown
    assert os.path.getsize(report_dir / "fid_by_budget.png") > 0


def test_an_arms_flags_win_over_the_family_ones(tmp_path):
    from gen.study.plan import arm_studies

    study = {"models": ["SiT-Mini/2"], "seeds": [0], "report_dir": str(tmp_path), "shared": {"max_steps": 3},
             "family": {"SiT": {"sampling_method": "euler"}}, "arms": {"base": {}, "heun": {"sampling_method": "heun"}}}
    commands = {arm: study_module.run_command_line(arm_study, "SiT-Mini/2", 0)
                for arm, arm_study in arm_studies(study).items()}
    parsed = {arm: add_training_flags(ArgumentParser(), "SiT").parse_args(command[2:]).sampling_method
              for arm, command in commands.items()}
    assert parsed == {"base": "euler", "heun": "heun"}


def test_a_study_file_is_checked_before_training(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [SiT-Huge/2]\nseeds: [0]\nreport_dir: x\nshared: {}\n")
    with pytest.raises(UserError, match="unknown model 'SiT-Huge/2'"):
        study_module.main([str(bad)])
    bad.write_text("models: [SiT-Mini/2]\n")
    with pytest.raises(UserError, match="lacks"):
        study_module.main([str(bad)])
    bad.write_text("models: [SiT-Mini/2]\nseeds: [0]\nreport_dir: x\nshared: {}\nnoise_floor_seeds: 1\n")
    with pytest.raises(UserError, match="noise_floor_seeds must be 0"):
        study_module.main([str(bad)])
    plain = "models: [SiT-Mini/2]\nseeds: [0]\nreport_dir: x\nshared: {}\n"
    for extra, phrase in (("jobs: 0", "jobs must be a whole number"), ("arms: {a: {}}", "at least two names"),
                          ("jobs: 2\nlauncher: accelerate", "train them one at a time"),
                          ("arms: {a: {}, ../b: {}}", "is not a folder name"),
                          ("arms: {a: {}, b: {weighting: sideways}}", "weighting")):
        bad.write_text(plain + extra + "\n")
        with pytest.raises(UserError, match=phrase):
            study_module.main([str(bad)])


# -- budgets: seconds and FLOPs on every log row, continued by a resumed run -------------------------------------
TINY_RUN = ["--model", "SiT-Mini/4-VCA", "--image-size", "16", "--num-classes", "10", "--vae", "none",
            "--no-random-flip", "--global-batch-size", "8", "--num-workers", "0", "--log-every", "1",
            "--sample-every", "0", "--num-sampling-steps", "2", "--sampling-method", "euler", "--ckpt-every", "2",
            "--eval-every", "2", "--eval-samples", "10", "--log-with", "none"]


def test_log_rows_carry_cumulative_training_seconds_and_flops_and_a_resume_continues_them(
        tmp_path, monkeypatch, one_thread, fresh_accelerate_state):
    import train_sit
    from gen.models import model_config
    from gen.models.flops import forward_flops_per_image
    from gen.run_log import read_log

    monkeypatch.setenv("FID_CACHE_DIR", str(tmp_path / "fid-cache"))
    train_sit.main([*TINY_RUN, "--results-dir", str(tmp_path / "run"), "--max-steps", "2"])
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    train_sit.main([*TINY_RUN, "--results-dir", str(tmp_path / "run"), "--max-steps", "4", "--resume", "latest"])
    log = read_log(tmp_path / "run" / "log.jsonl")
    per_image = forward_flops_per_image(model_config("SiT-Mini/4-VCA", input_size=16, in_channels=3, num_classes=10))
    steps = [row for row in log if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3, 4]
    assert [row["train_flops"] for row in steps] == [3 * per_image * 8 * step for step in (1, 2, 3, 4)]
    seconds = [row["train_seconds"] for row in steps]
    assert all(b > a > 0 for a, b in zip(seconds, seconds[1:], strict=False)), seconds  # resumed: on from step 2's
    evaluations = {row["step"]: row for row in log if "fid" in row}
    assert sorted(evaluations) == [2, 4]
    for step, row in evaluations.items():  # the same cumulative values as the step's own line
        same_step = next(line for line in steps if line["step"] == step)
        assert (row["train_seconds"], row["train_flops"]) == (same_step["train_seconds"], same_step["train_flops"])
    state = json.loads((tmp_path / "run" / "ckpt" / "step-0000002" / "training_state.json").read_text())
    assert state["train_flops"] == steps[1]["train_flops"] and state["train_seconds"] == steps[1]["train_seconds"]


# -- the comparison at an equal budget: pure functions on synthetic curves -------------------------------------
def test_the_common_budget_is_the_largest_every_curve_reached_and_curves_interpolate_linearly():
    import numpy as np

    from gen.study.stats import common_budget, value_at

    fast = (np.array([10.0, 20.0, 30.0]), np.array([100.0, 50.0, 20.0]))
    slow = (np.array([15.0, 25.0]), np.array([90.0, 40.0]))
    assert common_budget([fast, slow]) == 25.0
    assert value_at(fast, 25.0) == pytest.approx(35.0) and value_at(slow, 25.0) == pytest.approx(40.0)
    assert common_budget([fast, (np.array([40.0, 50.0]), np.array([1.0, 1.0]))]) is None  # no overlap: none
    assert common_budget([fast, (np.array([]), np.array([]))]) is None
    with pytest.raises(ValueError, match="outside"):
        value_at(slow, 30.0)


def test_the_paired_t_interval_matches_a_hand_computed_one():
    from gen.study.stats import paired_t_interval

    # differences -1, -2, -3: mean -2, std 1, t(0.975, 2) = 4.302653, half-width 4.302653 / sqrt(3) = 2.484138
    interval = paired_t_interval([-1.0, -2.0, -3.0])
    assert interval["mean"] == pytest.approx(-2.0) and interval["std"] == pytest.approx(1.0)
    assert interval["low"] == pytest.approx(-4.484138, abs=1e-5)
    assert interval["high"] == pytest.approx(0.484138, abs=1e-5)
    assert interval["method"] == "paired t interval, 3 seeds, 95%"
    one = paired_t_interval([-5.0])
    assert one["low"] is None and one["method"] == "one seed: no interval"


def test_the_verdict_needs_an_interval_without_zero_and_a_difference_above_the_noise_floor():
    from gen.study.stats import paired_t_interval, verdict

    vca_better = paired_t_interval([-3.0, -3.2, -2.8])
    assert verdict(vca_better, noise_floor=0.5)[0] == "VCA better"
    assert verdict(paired_t_interval([3.0, 3.2, 2.8]), noise_floor=0.5)[0] == "MHSA better"
    word, why = verdict(paired_t_interval([-3.0, 2.0, -1.0]), noise_floor=0.5)
    assert word == "not separable" and "contains 0" in why
    word, why = verdict(vca_better, noise_floor=4.0)
    assert word == "not separable" and "noise floor" in why
    assert verdict(paired_t_interval([-3.0]), noise_floor=0.5) == ("not separable", "one seed: no interval")


def test_twins_compare_at_the_same_step_time_and_flops():
    from gen.study.stats import compare_twins

    def log(fids, seconds_per_step, flops_per_step):
        return [{"step": step, "fid": fid, "train_seconds": step * seconds_per_step,
                 "train_flops": step * flops_per_step} for step, fid in zip((100, 200), fids, strict=True)]

    # VCA: FID 10 lower at every step, but each step costs twice the time and 1.5x the FLOPs
    vca = {0: log([40.0, 20.0], 2.0, 3e9), 1: log([42.0, 22.0], 2.0, 3e9)}
    mhsa = {0: log([50.0, 30.0], 1.0, 2e9), 1: log([51.0, 33.0], 1.0, 2e9)}
    at_steps = compare_twins(vca, mhsa, "step", noise_floor=1.0)
    assert at_steps["at"] == 200 and at_steps["mean"] == pytest.approx(-10.5) and at_steps["n"] == 2
    at_time = compare_twins(vca, mhsa, "train_seconds", noise_floor=1.0)
    assert at_time["at"] == 200.0  # VCA's step 100 against MHSA's step 200
    assert at_time["vca"] == pytest.approx([40.0, 42.0]) and at_time["mhsa"] == pytest.approx([30.0, 33.0])
    at_flops = compare_twins(vca, mhsa, "train_flops", noise_floor=1.0)
    assert at_flops["at"] == 4e11 and at_flops["vca"][0] == pytest.approx(40 - 20 * (400 - 300) / 300)


def test_the_digits_preset_is_stabilised_and_its_runs_parse(tmp_path):
    """The preset itself at test size: warm-up and clipping for every run, and each run's command line is one
    that train_dit.py / train_sit.py accept (checked, not trained)."""
    study = study_module.read_study("configs/study-digits.yaml")
    assert study["shared"]["warmup_steps"] > 0 and study["shared"]["max_grad_norm"] > 0
    study["report_dir"] = str(tmp_path)
    study_module.check_run_flags(study, "configs/study-digits.yaml")
    for model in study["models"]:
        command = study_module.run_command_line(study, model, seed=0)
        family = model_config(model).family
        parsed = add_training_flags(ArgumentParser(), family).parse_args(command[2:])  # past python, the script
        assert (parsed.model, parsed.warmup_steps, parsed.max_grad_norm) == (model, 100, 1.0)


def test_the_gpu_preset_runs_at_test_size(tmp_path, monkeypatch):
    """configs/study-digits-gpu.yaml as it is (64 px, 16x16 tokens, bf16, warm-up, clipping), shrunk to its first
    twins (DiT-S/4 and DiT-S/4-VCA; the SiT twins differ by family only, which the CPU study tests cover), 2 steps
    of 4 images, one seed, 10 evaluation samples and a one-image final grid (S models at 256 tokens sample a few
    images/s on a CPU): every run trains, evaluates and is reported. About 70 s."""
    monkeypatch.setenv("FID_CACHE_DIR", str(tmp_path / "fid-cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    study = study_module.read_study("configs/study-digits-gpu.yaml")
    assert study["shared"]["image_size"] // model_config(study["models"][0]).patch_size == 16  # the paper's grid
    assert study["models"][:2] == ["DiT-S/4", "DiT-S/4-VCA"]
    study.update(report_dir=str(tmp_path / "report"), seeds=[0], noise_floor_seeds=0, models=study["models"][:2])
    study["shared"].update(global_batch_size=4, max_steps=2, warmup_steps=2, ckpt_every=2, log_every=1,
                           eval_every=2, eval_samples=10, num_sampling_steps=2, grid_classes=[3], grid_columns=1)
    path = tmp_path / "gpu-preset.yaml"
    path.write_text(yaml.safe_dump(study))
    study_module.main([str(path)])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["models"]) == set(study["models"])
    for model in study["models"]:
        final = report["models"][model]["seeds"]["0"]["final"]
        assert final["fid"] > 0 and final["step"] == 2
