"""Safetensors export/import: round trips, metadata, checkpoint folders, official .pt files, clear failures."""
import datetime
import json

import pytest
import torch
from official import TINY, official_state_dict, tiny_official_model
from safetensors import safe_open
from safetensors.torch import save_file
from tiny import perturbed

from gen import load_pretrained, save_pretrained
from gen.models import SiT
from gen.weights.export import CheckpointError, official_name_and_size, read_settings


def outputs(model, channels=4):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, channels, 8, 8, generator=generator)
    with torch.no_grad():
        return model(x, torch.tensor([0, 500, 999]), torch.tensor([1, 5, 10]))


@pytest.mark.parametrize("name", ["DiT-Mini/2", "SiT-Mini/2-VCA"])
def test_round_trip_gives_identical_outputs(tmp_path, name):
    model = perturbed(name)
    path = save_pretrained(model, tmp_path / "model.safetensors")
    loaded = load_pretrained(path, expected_name=name)
    assert loaded.name == name and loaded.config == model.config and not loaded.training
    assert outputs(model).abs().mean() > 0
    assert torch.equal(outputs(loaded), outputs(model))
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left behind


def test_metadata_says_what_the_file_holds(tmp_path):
    model = perturbed("DiT-Mini/2")
    path = save_pretrained(model, tmp_path / "m.safetensors", ema=False, dtype=torch.bfloat16)
    with safe_open(path, framework="pt") as handle:
        info = handle.metadata()
        assert handle.get_tensor("pos_embed").dtype == torch.bfloat16
    assert info["format"] == "pt" and info["model_name"] == "DiT-Mini/2" and "gen_version" in info
    assert json.loads(info["config"]) == model.config.to_dict() and json.loads(info["ema"]) is False
    loaded = load_pretrained(path)
    assert loaded.pos_embed.dtype == torch.float32
    torch.testing.assert_close(outputs(loaded), outputs(model), atol=0.05, rtol=0.05)


def test_checkpoint_of_another_model_fails_naming_both(tmp_path):
    path = save_pretrained(perturbed("SiT-Mini/2"), tmp_path / "sit.safetensors")
    with pytest.raises(CheckpointError, match=r"holds SiT-Mini/2 weights, not DiT-Mini/2.*--model SiT-Mini/2"):
        load_pretrained(path, expected_name="DiT-Mini/2")


@pytest.mark.parametrize("keep_fraction", [0.001, 0.6])
def test_truncated_file_fails_clearly(tmp_path, keep_fraction):
    path = save_pretrained(perturbed("DiT-Mini/2"), tmp_path / "m.safetensors")
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(CheckpointError, match="truncated"):
        load_pretrained(truncated)


def test_safetensors_without_config_fails_clearly(tmp_path):
    path = tmp_path / "bare.safetensors"
    save_file(perturbed("DiT-Mini/2").state_dict(), path)
    with pytest.raises(CheckpointError, match="no model config in its metadata.*save_pretrained"):
        load_pretrained(path)


def test_missing_file_fails_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nothing.safetensors")


def test_training_checkpoint_folder_loads(tmp_path):
    model = perturbed("SiT-Mini/2-VCA")
    save_pretrained(model, tmp_path / "ema.safetensors", vae="none", process={"path_type": "GVP"})
    assert torch.equal(outputs(load_pretrained(tmp_path)), outputs(model))
    assert read_settings(tmp_path) == {"vae": "none", "process": {"path_type": "GVP"}, "sampler": None,
                                       "latent_norm": None}
    (tmp_path / "ema.safetensors").unlink()
    with pytest.raises(CheckpointError, match="is not a training checkpoint folder \\(it has no ema.safetensors\\)"):
        load_pretrained(tmp_path)


def test_a_network_built_directly_exports_and_rebuilds(tmp_path):
    torch.manual_seed(0)
    model = SiT(input_size=8, patch_size=2, in_channels=3, hidden_size=96, depth=3, num_heads=3, num_classes=5,
                attention="vca").eval()
    assert model.name == "SiT-custom/2-VCA" and model.config.hidden_size == 96
    loaded = load_pretrained(save_pretrained(model, tmp_path / "direct.safetensors"))
    assert type(loaded) is SiT and loaded.config == model.config
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7]), torch.tensor([1, 4])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_settings_travel_with_the_weights(tmp_path):
    process = {"noise_schedule": "cosine", "predict_xstart": True, "learn_sigma": True, "use_kl": False,
               "sigma_small": False, "rescale_learned_sigmas": False, "diffusion_steps": 1000}
    sampler = {"num_sampling_steps": 25, "cfg_scale": 1.4, "sampler": "ddim", "ddim_eta": 0.0}
    path = save_pretrained(perturbed("DiT-Mini/2"), tmp_path / "m.safetensors", vae="ema", process=process,
                           sampler=sampler)
    assert read_settings(path) == {"vae": "ema", "process": process, "sampler": sampler, "latent_norm": None}
    assert read_settings(save_pretrained(perturbed("DiT-Mini/2"), tmp_path / "bare.safetensors")) == \
        {"vae": None, "process": None, "sampler": None, "latent_norm": None}


def test_an_rgb_model_without_a_vae_record_is_a_pixel_model(tmp_path):
    pixels = save_pretrained(perturbed("SiT-Mini/2", in_channels=3), tmp_path / "pixels.safetensors")
    latents = save_pretrained(perturbed("SiT-Mini/2", in_channels=4), tmp_path / "latents.safetensors")
    assert read_settings(pixels)["vae"] == "none"
    assert read_settings(latents)["vae"] is None  # sample.py: DiT's SD-VAE


@pytest.mark.parametrize("family", ["dit", "sit"])
def test_official_pt_loads_with_name_and_options(tmp_path, family):
    path = tmp_path / "official.pt"
    torch.save({"ema": official_state_dict(family)}, path)
    name = "DiT-S/2" if family == "dit" else "SiT-S/2"
    loaded = load_pretrained(path, model_name=name, **TINY)
    assert torch.equal(outputs(loaded), outputs(tiny_official_model(family)))
    with pytest.raises(CheckpointError, match="pass --model"):
        load_pretrained(path)


def test_official_file_names_give_model_and_size():
    assert official_name_and_size("ckpts/DiT-XL-2-256x256.pt") == ("DiT-XL/2", 256)
    assert official_name_and_size("SiT-XL-2-512x512.pt") == ("SiT-XL/2", 512)
    assert official_name_and_size("model.pt") is None


def test_pt_file_with_code_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": {"weight": torch.zeros(1)}, "when": datetime.date(2024, 1, 1)}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_pretrained(path, model_name="DiT-Mini/2", input_size=8)
