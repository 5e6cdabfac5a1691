"""The study command: runs x seeds at one budget, finished runs kept, interrupted ones resumed, a report."""
import json
import os

import pytest
import yaml

from gen import study as study_module
from gen.errors import UserError


@pytest.fixture
def study_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FID_CACHE_DIR", str(tmp_path / "fid-cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    study = {"name": "tiny", "report_dir": str(tmp_path / "report"), "models": ["SiT-Mini/4", "SiT-Mini/4-VCA"],
             "seeds": [0], "shared": {"image_size": 16, "num_classes": 10, "vae": "none", "random_flip": False,
                                      "global_batch_size": 16, "max_steps": 2, "ckpt_every": 1, "log_every": 1,
                                      "sample_every": 0, "num_workers": 0, "num_sampling_steps": 3,
                                      "eval_every": 2, "eval_samples": 10, "log_with": "none"},
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


def test_a_study_file_is_checked_before_training(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [SiT-Huge/2]\nseeds: [0]\nreport_dir: x\nshared: {}\n")
    with pytest.raises(UserError, match="unknown model 'SiT-Huge/2'"):
        study_module.main([str(bad)])
    bad.write_text("models: [SiT-Mini/2]\n")
    with pytest.raises(UserError, match="lacks"):
        study_module.main([str(bad)])
