"""log.jsonl: one reader and one writer that survive the torn last line a killed run leaves."""
import pytest

from gen.errors import UserError
from gen.run_log import append_record, log_path, logged_steps, read_log
from gen.training.evaluation import evaluated_steps


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


def test_a_bad_line_before_the_last_is_refused_in_one_line(tmp_path):
    path = log_path(tmp_path)
    text = '{"step": 1}\nnot json\n{"step": 2}\n'
    with open(path, "w") as handle:
        handle.write(text)
    with pytest.raises(UserError, match="line 2 is not JSON"):
        read_log(path)


def test_no_log_means_no_logged_steps(tmp_path):
    assert evaluated_steps(tmp_path) == set()
