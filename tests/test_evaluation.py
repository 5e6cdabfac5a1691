"""Quality measured during training: scheduled evaluations, logged once per step, resumed with the run."""
import json
import os

import numpy as np
import pytest

import train_sit
from gen.training.evaluation import Evaluator

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
DIGITS = ["--model", "SiT-Mini/4", "--image-size", "16", "--num-classes", "10", "--global-batch-size", "16",
          "--num-workers", "0", "--vae", "none", "--no-random-flip", "--log-every", "1", "--sample-every", "0",
          "--num-sampling-steps", "3", "--sampling-method", "euler", "--log-with", "none", "--ckpt-every", "2",
          "--eval-every", "2", "--eval-samples", "20", "--eval-batch-size", "8", "--cfg-scale", "1.5"]


@pytest.fixture(autouse=True)
def private_feature_cache(tmp_path_factory, monkeypatch):
    """The digits network is trained once into a cache of the test session, not the user's."""
    monkeypatch.setenv("FID_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fid-cache"))


def evaluations(results_dir):
    with open(os.path.join(results_dir, "log.jsonl")) as handle:
        return [entry for entry in map(json.loads, handle) if "fid" in entry]


def test_evaluations_are_logged_on_schedule_and_resume_without_repeats(tmp_path):
    train_sit.main([*DIGITS, "--results-dir", str(tmp_path), "--max-steps", "4"])
    first = evaluations(tmp_path)
    assert [entry["step"] for entry in first] == [2, 4]
    for entry in first:
        assert entry["eval_samples"] == 20 and entry["eval_features"] == "digits"
        assert entry["fid"] > 0 and 0 <= entry["class_accuracy"] <= 1 and 0 <= entry["precision"] <= 1
    assert os.path.getsize(tmp_path / "curves.png") > 0

    train_sit.main([*DIGITS, "--results-dir", str(tmp_path), "--max-steps", "6", "--resume", "latest"])
    assert [entry["step"] for entry in evaluations(tmp_path)] == [2, 4, 6]  # step 4 is not scored again
    scored = evaluations(tmp_path)[-1]

    # a run stopped after its checkpoint but before that step's evaluation scores it when resumed
    lines = open(tmp_path / "log.jsonl").read().splitlines()
    kept = [line for line in lines if not ("fid" in json.loads(line) and json.loads(line)["step"] == 6)]
    (tmp_path / "log.jsonl").write_text("\n".join(kept) + "\n")
    train_sit.main([*DIGITS, "--results-dir", str(tmp_path), "--max-steps", "6", "--resume", "latest"])
    again = evaluations(tmp_path)
    assert [entry["step"] for entry in again] == [2, 4, 6]
    # the same EMA weights, images and seeds: the same numbers (evaluations compare across steps and runs)
    assert again[-1]["fid"] == pytest.approx(scored["fid"], rel=1e-6)
    assert again[-1]["class_accuracy"] == scored["class_accuracy"]


def test_gathered_shares_return_to_image_order():
    for count, world in [(5, 2), (20, 3), (7, 1)]:
        gathered = Evaluator.indices(count, world)  # process 0's images first, then process 1's, ...
        assert sorted(gathered.tolist()) == list(range(count))
        np.testing.assert_array_equal(gathered[np.argsort(gathered, kind="stable")], np.arange(count))
