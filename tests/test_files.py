"""The one atomic writer: a file appears under its real name whole or not at all."""
import os

import pytest

from common.files import FOLDER_MARKER, ForeignFiles, atomic_folder, atomic_open, atomic_path


def test_a_finished_write_replaces_the_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with atomic_open(path, "w") as handle:
        handle.write("new")
        assert path.read_text() == "old"  # nothing under the real name until the block ends
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("existing", [None, "old"])
def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, existing):
    path = tmp_path / "a.bin"
    if existing:
        path.write_text(existing)
    with pytest.raises(RuntimeError, match="disk pulled"):
        with atomic_open(path) as handle:
            handle.write(b"half of it")
            raise RuntimeError("disk pulled")
    assert os.listdir(tmp_path) == (["a.bin"] if existing else [])
    if existing:
        assert path.read_text() == existing


def test_path_writers_get_a_temporary_name_of_their_own(tmp_path):
    path = tmp_path / "w.safetensors"
    with atomic_path(path) as temporary:
        assert temporary != str(path) and str(os.getpid()) in temporary
        open(temporary, "wb").write(b"x")
    assert path.read_bytes() == b"x"


def test_a_folder_appears_whole_or_the_old_one_stays(tmp_path):
    folder = tmp_path / "export"
    with atomic_folder(folder, "writer") as temporary:
        (tmp_path / temporary / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(folder, "writer") as temporary:
        (tmp_path / temporary / "half.txt").write_text("half")
        raise RuntimeError("crash")
    assert os.listdir(tmp_path) == ["export"] and sorted(os.listdir(folder)) == [FOLDER_MARKER, "old.txt"]
    with atomic_folder(folder, "writer") as temporary:
        (tmp_path / temporary / "new.txt").write_text("new")
        assert (folder / "old.txt").exists()  # nothing changes under the real name until the block ends
    assert os.listdir(tmp_path) == ["export"] and sorted(os.listdir(folder)) == [FOLDER_MARKER, "new.txt"]


def test_an_empty_folder_is_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty", "writer") as temporary:
        (tmp_path / temporary / "a.txt").write_text("a")
    assert (tmp_path / "empty" / "a.txt").read_text() == "a"


@pytest.mark.parametrize("case", ["photos", "another writer", "a file added to ours", "a file", "forged marker"])
def test_a_folder_of_files_it_did_not_write_is_never_deleted(tmp_path, case):
    folder = tmp_path / "out"
    if case in ("another writer", "a file added to ours"):
        with atomic_folder(folder, "other" if case == "another writer" else "writer") as temporary:
            (tmp_path / temporary / "theirs.bin").write_text("theirs")
    if case in ("photos", "a file added to ours", "forged marker"):
        folder.mkdir(exist_ok=True)
        (folder / "holiday.jpg").write_text("photo")
    if case == "forged marker":
        (folder / FOLDER_MARKER).write_text('{"writer": "writer", "entries": "holiday.jpg"}')  # not a list
    if case == "a file":
        folder.write_text("a user's file")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    ran = []
    with pytest.raises(ForeignFiles, match="give a new") as refusal, atomic_folder(folder, "writer"):
        ran.append(True)
    assert not ran  # refused before the caller's work
    assert "holiday.jpg" in str(refusal.value) or case in ("another writer", "a file")
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_files_that_arrive_while_writing_stop_the_swap(tmp_path):
    folder = tmp_path / "out"
    with pytest.raises(ForeignFiles, match="late.txt"), atomic_folder(folder, "writer") as temporary:
        (tmp_path / temporary / "ours.txt").write_text("ours")
        folder.mkdir()
        (folder / "late.txt").write_text("someone else's")
    assert os.listdir(folder) == ["late.txt"] and os.listdir(tmp_path) == ["out"]


class OneProcess:
    """decided_by_main's view of a launch: which process this is, of how many."""

    def __init__(self, is_main_process):
        self.is_main_process, self.num_processes = is_main_process, 1


def test_the_main_process_decides_and_its_refusal_is_raised_as_the_callers_error():
    from common.errors import UserError
    from common.processes import decided_by_main

    assert decided_by_main(OneProcess(True), lambda: "lock") == "lock"
    calls = []
    assert decided_by_main(OneProcess(False), lambda: calls.append("decided")) is None and not calls

    def refuse():
        raise ForeignFiles("--sample-dir x holds files this command did not write (photo.jpg)")

    class RunError(UserError):
        pass

    with pytest.raises(RunError, match=r"^--sample-dir x holds files .* \(photo.jpg\)$"):
        decided_by_main(OneProcess(True), refuse, RunError)
