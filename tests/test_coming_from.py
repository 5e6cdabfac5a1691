"""docs/coming_from.md: every command of its "try it" blocks runs as written, in a scratch folder."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "coming_from.md"
BLOCKS = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.S)


def command_line(line: str) -> list[str]:
    """`python script.py ...` with this interpreter and the repository's script."""
    words = shlex.split(line)
    assert words[0] == "python", line
    return [sys.executable, str(ROOT / words[1]), *words[2:]]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_the_page_commands_run_as_written(block, tmp_path):
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for line in filter(None, (line.strip() for line in block.splitlines())):
        done = subprocess.run(command_line(line), cwd=tmp_path, env=environment, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
    assert (tmp_path / "results").is_dir()


def test_the_page_has_commands_for_each_habit():
    assert len(BLOCKS) == 3 and sum(len(block.strip().splitlines()) for block in BLOCKS) == 7
