"""Fixtures the test files share: recorded numbers, a tiny VAE, an image folder, and the settings that keep
in-process training and sampling runs independent and quick."""
import json
import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels (VCA's fused path) run through Triton's interpreter; Triton reads this when it
# is first imported, so it is set before anything imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (make test), the workers share the cores: each its share of threads, its subprocesses too
# (a test of tiny models with more threads than cores waits on them: the unit tier took twice as long).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from tiny import write_image_folder  # noqa: E402

# The end-to-end tier: files that train, sample, score or launch commands (most of the suite's time), and single
# tests marked @pytest.mark.e2e. `make test`
# runs everything; `make test-fast` (pytest -m "not e2e") the rest, the unit tier, for development.
END_TO_END_FILES = {
    "test_alignment.py", "test_attention_maps.py", "test_benchmarks.py", "test_checkpoints.py",
    "test_coming_from.py", "test_command_errors.py", "test_demo_score.py", "test_diffusers_format.py",
    "test_digits_features.py", "test_evaluation.py", "test_fid_pipeline.py", "test_pipeline.py",
    "test_python_api.py", "test_sampling.py", "test_study.py", "test_training.py", "test_training_options.py",
    "test_vca_fused.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in END_TO_END_FILES:
            item.add_marker(pytest.mark.e2e)
    # the long files first, so that xdist's workers end together on the many short ones, not one on a long one
    items.sort(key=lambda item: item.path.name not in END_TO_END_FILES)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_json():
    return json.loads((FIXTURES / "fixtures.json").read_text())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine waiting threads cost seconds a step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state; each in-process run may pick its own mixed precision."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """3 classes x 4 random 24x20 images: 3 steps per epoch at global batch 4."""
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory):
    """A diffusers AutoencoderKL with random weights (16x16 RGB <-> 4x8x8), saved as a local folder."""
    from diffusers.models import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=16)
    folder = str(tmp_path_factory.mktemp("vae"))
    vae.save_pretrained(folder)
    return folder
