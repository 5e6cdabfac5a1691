"""MHSA DiT models in diffusers' layout: diffusers' DiTTransformer2DModel computes what our DiT computes, its
DiTPipeline runs them, and they load back unchanged."""
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline
from tiny import perturbed

from gen.diffusers_format import load_diffusers, save_diffusers, to_diffusers
from gen.errors import InvalidValue
from gen.models import create_model


def inputs():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 4, 8, 8, generator=generator), torch.tensor([0, 500, 999]), torch.tensor([1, 5, 10])


def diffusers_output(transformer, x, t, y):
    with torch.no_grad():
        return transformer(x, timestep=t, class_labels=y).sample


def test_diffusers_transformer_computes_what_our_dit_computes():
    model = perturbed("DiT-Mini/2")
    transformer = to_diffusers(model)
    x, t, y = inputs()
    with torch.no_grad():
        ours = model(x, t, y)
    theirs = diffusers_output(transformer, x, t, y)
    # diffusers' timestep frequencies divide by (half - 1), DiT's by half: not the same outputs...
    assert not torch.allclose(theirs, ours, atol=1e-3)
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    # ...and with DiT's convention every weight is where it belongs
    torch.testing.assert_close(diffusers_output(transformer, x, t, y), ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_diffusers_folder_loads_back_unchanged(tmp_path, learn_sigma):
    model = perturbed("DiT-Mini/2", learn_sigma=learn_sigma)
    loaded = load_diffusers(save_diffusers(model, tmp_path / "transformer"))
    assert loaded.config == model.config
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_dit_pipeline_runs_an_export(tiny_vae):
    vae = AutoencoderKL.from_pretrained(tiny_vae)
    transformer = to_diffusers(perturbed("DiT-Mini/2", num_classes=1000))  # DiTPipeline's null class is 1000
    pipeline = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())
    images = pipeline(class_labels=[1, 7], num_inference_steps=3, guidance_scale=4.0, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 16, 16, 3) and images.std() > 0


def test_vca_models_have_no_diffusers_layout():
    with pytest.raises(InvalidValue, match="MHSA DiT"):
        to_diffusers(create_model("DiT-Mini/2-VCA", input_size=8, num_classes=10))
