"""The demo's scorer tells right, varied digits from a model that draws one digit per class."""
import numpy as np
import pytest

from fid.digits import real_digits
from gen.study.demo import score_digits


@pytest.fixture(autouse=True)
def private_feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FID_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fid-cache"))


def test_real_digits_score_at_the_floor_and_copies_of_one_digit_do_not():
    images, labels = real_digits(16, "held-out")
    real = score_digits(images, labels)
    assert real["class_accuracy"] > 0.95 and real["fid"] == pytest.approx(real["floor_fid"], rel=1e-6)
    assert 0.8 < real["spread"] < 1.2  # held-out digits vary as the training digits do
    first = np.array([np.flatnonzero(labels == c)[0] for c in range(10)])
    copies = np.repeat(first, 30)
    collapsed = score_digits(images[copies], labels[copies])
    assert collapsed["class_accuracy"] >= 0.8  # real digits, mostly right (one of the ten may be misread)...
    assert collapsed["spread"] < 0.01 and collapsed["fid"] > 10 * real["fid"]  # ...but not varied
