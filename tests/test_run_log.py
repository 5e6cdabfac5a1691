"""What a run logs: log.jsonl (one reader and one writer that survive the torn last line a killed run leaves) and
its sample grids in every tracker that shows images."""
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from gen.run_log import append_record, log_path, logged_steps, read_log
from gen.training.evaluation import evaluated_steps
from gen.training.log import TrainingLog


def test_a_torn_last_line_is_skipped_when_read_and_cut_off_before_the_next_append(tmp_path):
    path = log_path(tmp_path)
    append_record(path, {"step": 1, "loss": 0.5})
    append_record(path, {"step": 2, "fid": 9.0})
    with open(path, "a") as handle:
        handle.write('{"step": 3, "fi')  # killed mid-append
    assert read_log(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "fid": 9.0}]
    assert evaluated_steps(tmp_path) == logged_steps(path, "fid") == {2}
    append_record(path, {"step": 3, "fid": 8.0})  # the resumed run
    assert read_log(path)[-1] == {"step": 3, "fid": 8.0} and len(read_log(path)) == 3
    assert open(path).read().count("\n") == 3


def test_a_complete_last_record_without_a_newline_is_kept(tmp_path):
    path = log_path(tmp_path)
    with open(path, "w") as handle:
        handle.write('{"step": 1, "loss": 0.5}')
    append_record(path, {"step": 2, "loss": 0.4})
    assert read_log(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]


def test_a_bad_line_before_the_last_is_refused_in_one_line(tmp_path):
    path = log_path(tmp_path)
    text = '{"step": 1}\nnot json\n{"step": 2}\n'
    with open(path, "w") as handle:
        handle.write(text)
    with pytest.raises(UserError, match="line 2 is not JSON"):
        read_log(path)


def test_no_log_means_no_logged_steps(tmp_path):
    assert evaluated_steps(tmp_path) == set()


class RecordingTracker:
    """An Accelerate tracker's image methods, recording what they were given."""

    def __init__(self, name):
        self.name, self.calls = name, []

    def log_images(self, values, step=None, **kwargs):
        self.calls.append(("log_images", values, step, kwargs))

    def log_artifact(self, path, artifact_path=None):
        self.calls.append(("log_artifact", path, artifact_path))


def test_sample_grids_reach_every_tracker_that_shows_images_in_its_own_form(tmp_path):
    png = tmp_path / "grid.png"
    Image.fromarray(np.full((6, 4, 3), 200, dtype=np.uint8)).save(png)
    trackers = {name: RecordingTracker(name) for name in ("tensorboard", "wandb", "aim", "mlflow", "comet_ml")}
    accelerator = SimpleNamespace(is_main_process=True, trackers=list(trackers.values()))
    TrainingLog(accelerator, tmp_path).image(7, "samples", png)
    (_, values, step, kwargs), = trackers["tensorboard"].calls
    assert values["samples"].shape == (1, 6, 4, 3) and step == 7 and kwargs == {"dataformats": "NHWC"}
    (_, values, step, _), = trackers["wandb"].calls
    assert len(values["samples"]) == 1 and values["samples"][0].shape == (6, 4, 3) and step == 7
    (_, values, step, _), = trackers["aim"].calls
    assert values["samples"].shape == (6, 4, 3)
    assert trackers["mlflow"].calls == [("log_artifact", png, "samples/step_0000007")]
    assert trackers["comet_ml"].calls == []  # no image method in Accelerate's tracker: metrics only
