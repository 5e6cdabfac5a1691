"""gen.pipeline.GenerationPipeline: the one-call Python API draws what sample.py draws, from the file's settings."""
import numpy as np
import pytest
import torch
from PIL import Image
from tiny import perturbed

import sample
from common.errors import UserError
from gen import GenerationPipeline, save_pretrained
from gen.family import make_sampler
from gen.sampling import sample_grid
from gen.sampling.grid import GRID_GAP, GRID_MIN_SIDE
from gen.settings import DIFFUSION_DEFAULTS, TRANSPORT_DEFAULTS

pytestmark = pytest.mark.usefixtures("one_thread")
DDIM_RECORD = dict(sampler="ddim", ddim_eta=0.0, num_sampling_steps=3, cfg_scale=1.4)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Pixel-space (8x8 RGB) DiT and SiT exports; the DiT records DDIM, 3 steps, guidance 1.4."""
    folder = tmp_path_factory.mktemp("pipeline")
    dit = perturbed("DiT-Mini/2", in_channels=3)
    sit = perturbed("SiT-Mini/2", in_channels=3)
    return {
        "DiT": str(save_pretrained(dit, folder / "dit.safetensors", vae="none", process=DIFFUSION_DEFAULTS,
                                   sampler=DDIM_RECORD)),
        "SiT": str(save_pretrained(sit, folder / "sit.safetensors", vae="none", process=TRANSPORT_DEFAULTS)),
    }


def grid_cells(path, count, side=8, columns=4):
    """The images of a sample.py grid PNG, back at their own size (the grid enlarges them by nearest neighbour)."""
    grid = np.asarray(Image.open(path))
    scale = GRID_MIN_SIDE // side
    cells = []
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = GRID_GAP + row * (GRID_MIN_SIDE + GRID_GAP), GRID_GAP + column * (GRID_MIN_SIDE + GRID_GAP)
        cells.append(grid[top : top + GRID_MIN_SIDE : scale, left : left + GRID_MIN_SIDE : scale])
    return np.stack(cells)


def test_pil_images_of_the_right_size_and_count(exports):
    pipe = GenerationPipeline.from_pretrained(exports["DiT"], device="cpu")
    images = pipe(class_labels=[1, 2, 3], num_inference_steps=2)
    assert len(images) == 3 and all(isinstance(image, Image.Image) for image in images)
    assert {image.size for image in images} == {(8, 8)} and {image.mode for image in images} == {"RGB"}
    pixels, tensor = pipe([4], num_inference_steps=2, output_type="np"), pipe(4, num_inference_steps=2,
                                                                               output_type="pt")
    assert pixels.shape == (1, 8, 8, 3) and pixels.dtype == np.uint8
    assert tensor.shape == (1, 3, 8, 8) and tensor.dtype == torch.float32 and tensor.abs().max() <= 1
    assert "DiT-Mini/2" in repr(pipe) and "ddim, 3 steps, guidance 1.4" in repr(pipe)


@pytest.mark.parametrize("family, sampler_flags, options", [
    ("DiT", ["--sampler", "ddpm"], dict(sampler="ddpm")),  # stochastic: every step's noise from (seed, image)
    ("SiT", ["--mode", "SDE"], dict(sampler="SDE")),
])
def test_images_are_sample_py_grid_images(tmp_path, exports, family, sampler_flags, options):
    labels, seed = [3, 1, 4, 1, 5], 7
    output = tmp_path / "grid.png"
    sample.main(["--ckpt", exports[family], "--class-labels", *map(str, labels), "--seed", str(seed),
                 "--num-sampling-steps", "3", "--cfg-scale", "1.5", "--output", str(output), *sampler_flags])
    pipe = GenerationPipeline.from_pretrained(exports[family], device="cpu")
    images = pipe(labels, num_inference_steps=3, guidance_scale=1.5, seed=seed, output_type="np", **options)
    np.testing.assert_array_equal(images, grid_cells(output, len(labels)))
    assert images.std() > 10  # not a blank grid


def test_images_are_sample_grid_images_of_the_seed(exports):
    pipe = GenerationPipeline.from_pretrained(exports["SiT"], device="cpu")
    images = pipe([0, 9], num_inference_steps=4, guidance_scale=2.0, seed=3, sampling_method="euler",
                  output_type="pt")
    sample_fn = make_sampler("SiT", "ODE", 4, sampling_method="euler", **TRANSPORT_DEFAULTS)
    expected = sample_grid(pipe.model, None, [0, 9], sample_fn, latent_shape=(3, 8), seed=3, cfg_scale=2.0)
    torch.testing.assert_close(images, expected, rtol=0, atol=0)


def test_a_generator_picks_the_seed_deterministically(exports):
    pipe = GenerationPipeline.from_pretrained(exports["DiT"], device="cpu")
    first = pipe([1, 2], generator=torch.Generator().manual_seed(11), output_type="np")
    again = pipe([1, 2], generator=torch.Generator().manual_seed(11), output_type="np")
    other = pipe([1, 2], generator=torch.Generator().manual_seed(12), output_type="np")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    drawn_seed = int(torch.randint(2**32, (1,), generator=torch.Generator().manual_seed(11)))
    np.testing.assert_array_equal(first, pipe([1, 2], seed=drawn_seed, output_type="np"))  # one draw: the seed


def test_the_recorded_sampler_steps_and_guidance_are_the_defaults(exports):
    pipe = GenerationPipeline.from_pretrained(exports["DiT"], device="cpu")
    settings = pipe.sampler_settings()
    assert (settings.sampler, settings.ddim_eta, settings.num_sampling_steps, settings.cfg_scale) == \
        ("ddim", 0.0, 3, 1.4)
    recorded = pipe([2, 5], seed=1, output_type="np")
    given = pipe([2, 5], seed=1, sampler="ddim", num_inference_steps=3, guidance_scale=1.4, output_type="np")
    np.testing.assert_array_equal(recorded, given)
    assert not np.array_equal(recorded, pipe([2, 5], seed=1, num_inference_steps=5, output_type="np"))
    assert not np.array_equal(recorded, pipe([2, 5], seed=1, guidance_scale=3.0, output_type="np"))
    sit = GenerationPipeline.from_pretrained(exports["SiT"], device="cpu").sampler_settings()
    assert (sit.mode, sit.num_sampling_steps, sit.cfg_scale) == ("ODE", 250, 4.0)  # no record: DiT's and SiT's


@pytest.mark.parametrize("call, message", [
    (dict(class_labels=[10]), r"class_labels \[10\] must be integers in \[0, 10\)"),
    (dict(class_labels=[]), "at least one"),
    (dict(class_labels=[1], num_inference_steps=0), "num_inference_steps must be at least 1, got 0"),
    (dict(class_labels=[1], sampler="SDE"), "unknown DiT sampler 'SDE'"),
    (dict(class_labels=[1], sampling_method="euler"), "unknown DiT sampler option 'sampling_method'"),
    (dict(class_labels=[1], guidance_scale=0.5), "guidance_scale must be a number >= 1"),
    (dict(class_labels=[1], output_type="latent"), "unknown output_type 'latent'"),
    (dict(class_labels=[1], seed=1, generator=torch.Generator()), "seed or generator, not both"),
])
def test_bad_calls_fail_in_one_line(exports, call, message):
    pipe = GenerationPipeline.from_pretrained(exports["DiT"], device="cpu")
    with pytest.raises(UserError, match=message) as error:
        pipe(**call)
    assert "\n" not in str(error.value)


def test_bad_files_and_settings_fail_in_one_line(tmp_path, exports):
    with pytest.raises(UserError, match="not found") as error:
        GenerationPipeline.from_pretrained(tmp_path / "missing.safetensors", device="cpu")
    with pytest.raises(UserError, match="--vae ema contradicts .* trained with --vae none"):
        GenerationPipeline.from_pretrained(exports["DiT"], device="cpu", vae="ema")
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        GenerationPipeline.from_pretrained(exports["DiT"], device="cpu", precision="fp8")
    assert "\n" not in str(error.value)


def test_a_latent_model_decodes_through_its_recorded_vae_folder(tmp_path, tiny_vae):
    path = save_pretrained(perturbed("DiT-Mini/2", in_channels=4), tmp_path / "latent.safetensors", vae=tiny_vae,
                           process=DIFFUSION_DEFAULTS, sampler=DDIM_RECORD)
    pipe = GenerationPipeline.from_pretrained(path, device="cpu")
    assert pipe.vae is not None and pipe.latent_shape == (4, 8)
    images = pipe([1, 2], num_inference_steps=2)
    assert [image.size for image in images] == [(16, 16)] * 2  # the VAE doubles the 8x8 latents
    output = tmp_path / "grid.png"
    sample.main(["--ckpt", str(path), "--class-labels", "1", "2", "--num-sampling-steps", "2", "--output",
                 str(output)])
    np.testing.assert_array_equal(np.stack([np.asarray(image) for image in images]), grid_cells(output, 2, side=16))
