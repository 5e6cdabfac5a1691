"""The one atomic writer: a file appears under its real name whole or not at all."""
import os

import pytest

from common.files import atomic_folder, atomic_open, atomic_path


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
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(folder) as temporary:
        (tmp_path / temporary / "half.txt").write_text("half")
        raise RuntimeError("crash")
    assert os.listdir(tmp_path) == ["export"] and os.listdir(folder) == ["old.txt"]
    with atomic_folder(folder) as temporary:
        (tmp_path / temporary / "new.txt").write_text("new")
        assert os.listdir(folder) == ["old.txt"]  # nothing changes under the real name until the block ends
    assert os.listdir(tmp_path) == ["export"] and os.listdir(folder) == ["new.txt"]
