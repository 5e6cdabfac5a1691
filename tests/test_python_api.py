"""The README's three calls from Python, at test size: train on the digits, sample, score."""
import os

import numpy as np
import pytest

import fid
import gen
from common.errors import UserError
from gen.run_log import log_path, read_log

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.yaml")


def test_train_sample_and_score_in_three_calls(tmp_path):
    run = gen.train_model("SiT-Mini/4-VCA", config=CONFIG, max_steps=4, global_batch_size=16, final_samples=0,
                          log_every=2, results_dir=str(tmp_path / "run"))  # the keywords win over demo.yaml
    assert [entry["step"] for entry in read_log(log_path(run)) if "loss" in entry][-1] == 4
    labels = [i % 10 for i in range(20)]
    pipe = gen.GenerationPipeline.from_pretrained(os.path.join(run, "model.safetensors"))
    images = pipe(class_labels=labels, num_inference_steps=2, seed=0, output_type="np")
    assert images.shape == (20, 16, 16, 3) and images.dtype == np.uint8
    scores = fid.compute_metrics(images, fid.digits.real_digits_reference(16), features="digits", labels=labels,
                                 progress=False)
    assert np.isfinite(scores["fid"]) and 0 <= scores["class_accuracy"] <= 1


@pytest.mark.parametrize(("settings", "phrase"), [(dict(max_step=4), "unknown key(s) ['max_step']"),
                                                  (dict(lr="fast"), "lr")])
def test_a_bad_setting_is_one_line_naming_it(settings, phrase, tmp_path):
    with pytest.raises(UserError, match="train_model") as error:
        gen.train_model("SiT-Mini/4-VCA", results_dir=str(tmp_path / "run"), **settings)
    assert phrase in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_precision_is_a_setting_despite_its_tf32_alias(tmp_path):
    # --tf32 shares --precision's destination; the setting is --precision's (choices), not the alias's switch
    with pytest.raises(UserError, match="precision") as error:
        gen.train_model("SiT-Mini/4-VCA", results_dir=str(tmp_path / "run"), precision="fp16")
    assert "fp16" in str(error.value) and "true or false" not in str(error.value)
    assert "gen.train_model --help" in str(error.value)
