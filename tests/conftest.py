import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_json():
    return json.loads((FIXTURES / "fixtures.json").read_text())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
