"""MHSA DiT models in diffusers' layout: diffusers' DiTTransformer2DModel computes what our DiT computes, its
DiTPipeline runs them, and they load back unchanged."""
import os

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline
from tiny import perturbed

from gen.diffusers_format import load_diffusers, save_diffusers, save_diffusers_pipeline, to_diffusers
from gen.errors import InvalidValue, MissingInput
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


def test_pipeline_folder_loads_in_diffusers_runs_and_loads_back(tmp_path, tiny_vae):
    model = perturbed("DiT-Mini/2", num_classes=1000)  # DiTPipeline's null class is 1000
    folder = tmp_path / "pipe"
    (folder / "stale").mkdir(parents=True)  # an older export in the way is replaced whole
    save_diffusers_pipeline(model, tiny_vae, folder, id2label={1: "one, uno", 7: "seven"})
    assert sorted(os.listdir(tmp_path)) == ["pipe"]  # no temporary folder left beside it
    assert sorted(os.listdir(folder)) == ["model_index.json", "scheduler", "transformer", "vae"]
    pipeline = DiTPipeline.from_pretrained(folder)
    assert isinstance(pipeline.scheduler, DDIMScheduler) and pipeline.get_label_ids(["uno", "seven"]) == [1, 7]
    betas = pipeline.scheduler.betas
    assert len(betas) == 1000 and betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    x, t, y = inputs()
    for block in pipeline.transformer.transformer_blocks:  # DiT's timestep convention (see test above)
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    with torch.no_grad():
        torch.testing.assert_close(diffusers_output(pipeline.transformer, x, t, y), model(x, t, y),
                                   rtol=1e-5, atol=1e-5)
    pipeline = DiTPipeline.from_pretrained(folder)
    images = pipeline(class_labels=[1, 7], num_inference_steps=2, guidance_scale=4.0, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 16, 16, 3) and images.std() > 0
    loaded = load_diffusers(folder)  # a pipeline root reads its transformer/
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_save_diffusers_writes_the_transformer_into_the_folder_itself(tmp_path):
    folder = save_diffusers(perturbed("DiT-Mini/2"), tmp_path / "dir")
    assert sorted(os.listdir(folder)) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_a_folder_that_is_neither_pipeline_nor_transformer_is_named(tmp_path):
    with pytest.raises(MissingInput, match=f"{tmp_path} is neither a diffusers pipeline folder .*model_index.json"):
        load_diffusers(str(tmp_path))


def test_vca_models_have_no_diffusers_layout(tmp_path, tiny_vae):
    with pytest.raises(InvalidValue, match="MHSA DiT"):
        to_diffusers(create_model("DiT-Mini/2-VCA", input_size=8, num_classes=10))
    with pytest.raises(InvalidValue, match="MHSA DiT"):
        save_diffusers_pipeline(create_model("DiT-Mini/2-VCA", input_size=8, num_classes=10), tiny_vae, tmp_path / "p")
    with pytest.raises(InvalidValue, match="MHSA DiT"):
        save_diffusers_pipeline(create_model("SiT-Mini/2", input_size=8, num_classes=10), tiny_vae, tmp_path / "p")
    assert not os.listdir(tmp_path)
