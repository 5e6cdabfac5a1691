"""The README's Python examples run as written (those that need a downloaded checkpoint are left out)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
# The official-checkpoint example needs a 2.7 GB download; its loading path is tested in test_models.py. The
# Python training example trains for minutes; test_python_api.py runs its calls at test size.
BLOCKS = [code for code in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
          if '.pt"' not in code and "train_model(" not in code]


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    code = BLOCKS[index]
    exec(compile(code, f"README.md example {index}", "exec"), {})
