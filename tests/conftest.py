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

from tiny import write_image_folder  # noqa: E402

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
