"""MHSA DiT models in diffusers' layout: diffusers' DiTTransformer2DModel computes what our DiT computes, its
DiTPipeline runs them, and they load back unchanged. VCA and SiT models in diffusers' custom-code layout:
DiffusionPipeline.from_pretrained(folder, trust_remote_code=True) loads them and draws our images."""
import json
import os
import runpy
import sys

import numpy as np
import pytest
import torch
import yaml
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, DiTPipeline
from tiny import perturbed

from common.cli import run_command
from common.errors import InvalidValue, MissingInput
from common.files import FOLDER_MARKER
from gen import GenerationPipeline, save_pretrained
from gen.diffusion import create_diffusion
from gen.family import recorded_process
from gen.hub.diffusers_format import (
    REMOTE_CODE,
    dit_scheduler,
    load_diffusers,
    main,
    save_diffusers,
    save_diffusers_pipeline,
    to_diffusers,
)
from gen.models import create_model
from gen.settings import DIFFUSION_DEFAULTS


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
    save_diffusers_pipeline(perturbed("SiT-Mini/2"), tiny_vae, folder)  # an older export there is replaced whole
    save_diffusers_pipeline(model, tiny_vae, folder, id2label={1: "one, uno", 7: "seven"})
    assert sorted(os.listdir(tmp_path)) == ["pipe"]  # no temporary folder left beside it
    assert sorted(os.listdir(folder)) == [FOLDER_MARKER, "README.md", "model_index.json", "scheduler", "transformer",
                                          "vae"]
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
    assert sorted(os.listdir(folder)) == [FOLDER_MARKER, "config.json", "diffusion_pytorch_model.safetensors"]


def test_a_folder_that_is_neither_pipeline_nor_transformer_is_named(tmp_path):
    with pytest.raises(MissingInput, match=f"{tmp_path} is neither a diffusers pipeline folder .*model_index.json"):
        load_diffusers(str(tmp_path))


def test_vca_models_have_no_diffusers_transformer_layout():
    with pytest.raises(InvalidValue, match="MHSA DiT"):
        to_diffusers(create_model("DiT-Mini/2-VCA", input_size=8, num_classes=10))


# -- VCA and SiT models: diffusers' custom-code layout, run by gen's sampling -------------------------------------
def ours_and_theirs(pipe, ours, **call):
    """The PIL images of the diffusers pipeline and of our GenerationPipeline for the same call, as arrays."""
    theirs = pipe(class_labels=[1, 7], generator=torch.Generator().manual_seed(0), **call).images
    mine = ours(class_labels=[1, 7], generator=torch.Generator().manual_seed(0), **call)
    return np.stack([np.asarray(image) for image in theirs]), np.stack([np.asarray(image) for image in mine])


@pytest.mark.parametrize("name", ["DiT-Mini/2-VCA", "SiT-Mini/2", "SiT-Mini/2-VCA"])
def test_custom_folder_loads_in_diffusers_and_draws_our_images(tmp_path, tiny_vae, one_thread, name):
    model = perturbed(name)
    folder = tmp_path / "pipe"
    save_diffusers_pipeline(model, tiny_vae, folder, id2label={1: "one, uno", 7: "seven"})
    assert sorted(os.listdir(tmp_path)) == ["pipe"]  # no temporary folder left beside it
    expected = [FOLDER_MARKER, "README.md", "gen_pipeline.py", "model_index.json", "transformer", "vae"]
    expected += ["scheduler"] if "DiT" in name else []
    assert sorted(os.listdir(folder)) == sorted(expected)
    assert "gen_transformer.py" in os.listdir(folder / "transformer")
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(pipe).__name__ == "GenPipeline" and pipe.get_label_ids(["uno", "seven"]) == [1, 7]
    assert pipe.config.process == recorded_process(model, None)
    if "DiT" in name:
        assert isinstance(pipe.scheduler, DDIMScheduler) and len(pipe.scheduler.betas) == 1000
    else:
        assert pipe.scheduler is None  # SiT's transport has no diffusers scheduler
    x, t, y = inputs()
    with torch.no_grad():  # the transformer is our model, weights and all
        assert torch.equal(pipe.transformer(x, t / 1000 if "SiT" in name else t, y),
                           model(x, t / 1000 if "SiT" in name else t, y))
    ours = GenerationPipeline(model, AutoencoderKL.from_pretrained(tiny_vae), process=recorded_process(model, None),
                              latent_shape=(4, 8))
    theirs, mine = ours_and_theirs(pipe, ours, num_inference_steps=2, guidance_scale=2.0)
    assert theirs.shape == (2, 16, 16, 3) and theirs.std() > 0
    np.testing.assert_array_equal(theirs, mine)
    floats = pipe(class_labels=[1, 7], num_inference_steps=2, guidance_scale=2.0, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images  # diffusers' convention: floats in [0, 1]
    assert floats.shape == (2, 16, 16, 3) and np.abs(floats * 255 - theirs).max() <= 1
    loaded = load_diffusers(folder)
    assert loaded.config == model.config
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in model.state_dict().items())


def test_custom_folder_of_an_export_samples_with_its_recorded_settings(tmp_path, tiny_vae, one_thread):
    model = perturbed("DiT-Mini/2-VCA")
    process = dict(recorded_process(model, None), noise_schedule="cosine")  # not DiT's linear betas
    sampler = dict(sampler="ddim", ddim_eta=0.0, num_sampling_steps=3, cfg_scale=2.0)
    path = save_pretrained(model, tmp_path / "model.safetensors", vae=tiny_vae, process=process, sampler=sampler)
    save_diffusers_pipeline(path, tiny_vae, tmp_path / "pipe")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    assert pipe.config.process == process and pipe.config.sampler == sampler
    theirs, mine = ours_and_theirs(pipe, GenerationPipeline.from_pretrained(path, device="cpu"))  # the record's
    np.testing.assert_array_equal(theirs, mine)


def test_mhsa_dit_goes_custom_when_asked_or_off_dit_diffusion(tmp_path, tiny_vae):
    model = perturbed("DiT-Mini/2")
    save_diffusers_pipeline(model, tiny_vae, tmp_path / "asked", custom=True)
    other = dict(recorded_process(model, None), predict_xstart=True)
    save_diffusers_pipeline(model, tiny_vae, tmp_path / "x0", process=other)
    for name in ("asked", "x0"):
        index = json.loads((tmp_path / name / "model_index.json").read_text())
        assert index["_class_name"] == ["gen_pipeline", "GenPipeline"]
    assert load_diffusers(tmp_path / "x0").config == model.config


@pytest.mark.parametrize("options, vae", [({"num_classes": 10}, "tiny"), ({"in_channels": 3}, None)],
                         ids=["10 classes", "pixels"])
def test_a_dit_that_diffusers_dit_pipeline_cannot_sample_goes_custom_and_samples(tmp_path, tiny_vae, one_thread,
                                                                                options, vae):
    """DiTPipeline guides with class 1000 as the null class (an IndexError with 10 classes) and always decodes with
    a VAE (none for pixels): such DiTs go custom, and sample with guidance as they were trained."""
    model = perturbed("DiT-Mini/2", **options)
    folder = save_diffusers_pipeline(model, tiny_vae if vae else None, tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["_class_name"] == [
        "gen_pipeline", "GenPipeline"]
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    images = pipe(class_labels=[1, 9], num_inference_steps=2, guidance_scale=4.0, output_type="pt").images
    assert images.shape[:2] == (2, 3) and torch.isfinite(images).all()


def test_a_loaded_custom_pipeline_saves_a_folder_that_loads_and_draws_the_same(tmp_path, tiny_vae, one_thread):
    folder = save_diffusers_pipeline(perturbed("SiT-Mini/2-VCA"), tiny_vae, tmp_path / "pipe", id2label={3: "three"},
                                     sampler=dict(mode="ODE", num_sampling_steps=2, cfg_scale=1.5))
    first = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    first.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "model_index.json").read_text())["_class_name"] == [
        "gen_pipeline", "GenPipeline"]
    second = DiffusionPipeline.from_pretrained(tmp_path / "again", trust_remote_code=True)
    draw = dict(class_labels=second.get_label_ids(["three"]), seed=0, output_type="np")
    np.testing.assert_array_equal(first(**draw).images, second(**draw).images)
    with pytest.raises(ValueError, match="upload_folder"):
        second.save_pretrained(tmp_path / "hub", push_to_hub=True)


def test_the_custom_pipeline_keeps_diffusers_habits(tmp_path, tiny_vae, one_thread, capsys):
    """A list of generators draws image i from generator i; a guidance_scale of 1 or less is no guidance; the progress
    bar follows set_progress_bar_config."""
    pipe = DiffusionPipeline.from_pretrained(save_diffusers_pipeline(perturbed("SiT-Mini/2"), tiny_vae, tmp_path / "p"),
                                             trust_remote_code=True)
    draw = dict(num_inference_steps=2, output_type="np")
    both = pipe([1, 2], generator=[torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)], **draw).images
    alone = pipe([2], generator=[torch.Generator().manual_seed(6)], **draw).images
    np.testing.assert_array_equal(both[1], alone[0])
    np.testing.assert_array_equal(pipe(np.int64(2), seed=3, **draw).images, pipe([2], seed=3, **draw).images)
    with pytest.raises(ValueError, match="3 generators for 2 class labels"):
        pipe([1, 2], generator=[torch.Generator()] * 3)
    np.testing.assert_array_equal(pipe([1], seed=0, guidance_scale=0.0, **draw).images,
                                  pipe([1], seed=0, guidance_scale=1.0, **draw).images)
    capsys.readouterr()
    pipe.set_progress_bar_config(disable=True)
    pipe([1], seed=0, **draw)
    quiet = capsys.readouterr().err
    pipe.set_progress_bar_config(disable=False)
    pipe([1], seed=0, **draw)
    assert quiet == "" and "sampling" in capsys.readouterr().err


def front_matter(card: str) -> dict:
    assert card.startswith("---\n"), "the hub reads the metadata block at the very top"
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
def test_a_run_and_its_pipeline_folder_carry_a_model_card(tmp_path, tiny_vae):
    """README.md beside the export and in the diffusers folder: the hub's metadata block (library, tags, pipeline tag,
    an empty license for the owner), the training settings, the run's last measured FID, how to sample."""
    import train_sit

    run = tmp_path / "run"
    run_command(train_sit.main, ["--model", "SiT-Mini/2-VCA", "--image-size", "8", "--num-classes", "10",
                                 "--global-batch-size", "8", "--num-workers", "0", "--vae", "none",
                                 "--sample-every", "0", "--max-steps", "2", "--ckpt-every", "2", "--log-with", "none",
                                 "--final-samples", "0", "--sampling-method", "euler", "--num-sampling-steps", "2",
                                 "--eval-every", "2", "--eval-samples", "10", "--results-dir", str(run)])
    card = (run / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "vca-gen" and meta["pipeline_tag"] == "unconditional-image-generation"
    assert {"class-conditional", "sit", "vca"} <= set(meta["tags"]) and "license" in meta and meta["license"] is None
    assert "| max_steps | 2 |" in card and "At step 2" in card and "| fid |" in card
    assert "python sample.py --ckpt model.safetensors" in card
    from huggingface_hub import ModelCard  # what the hub's upload reads, parsed offline

    assert ModelCard.load(run / "README.md").data.to_dict()["tags"] == meta["tags"]
    main([str(run / "model.safetensors"), str(tmp_path / "pipe")])
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert front_matter(card)["library_name"] == "diffusers" and "trust_remote_code=True" in card
    assert "| global_batch_size | 8 |" in card  # the run's settings travel with the export


def test_custom_folder_needs_trust_remote_code_and_its_weights(tmp_path, tiny_vae):
    folder = save_diffusers_pipeline(perturbed("SiT-Mini/2"), tiny_vae, tmp_path / "pipe")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(folder)
    os.remove(os.path.join(folder, "transformer", "diffusion_pytorch_model.safetensors"))
    with pytest.raises(MissingInput, match="is neither a diffusers pipeline folder"):
        load_diffusers(folder)


@pytest.mark.parametrize("file, module", [("gen_pipeline.py", "gen.pipeline"), ("gen_transformer.py", "gen.models")])
def test_remote_code_without_gen_names_the_install(monkeypatch, file, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if the project were not installed
    with pytest.raises(ImportError, match="pip install"):
        runpy.run_path(os.path.join(REMOTE_CODE, file))


def test_a_pixel_model_needs_no_vae(tmp_path, one_thread):
    model = perturbed("SiT-Mini/2", in_channels=3)
    save_diffusers_pipeline(model, None, tmp_path / "pipe")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    images = pipe(class_labels=[1], num_inference_steps=2, guidance_scale=1.0, output_type="pt").images
    assert pipe.vae is None and images.shape == (1, 3, 8, 8) and torch.isfinite(images).all()
    with pytest.raises(InvalidValue, match="pass its VAE"):
        save_diffusers_pipeline(perturbed("SiT-Mini/2"), None, tmp_path / "latent")


def test_command_line_exports_any_model_with_its_record(tmp_path, tiny_vae, capsys):
    sampler = dict(mode="ODE", num_sampling_steps=3, cfg_scale=1.5)
    path = save_pretrained(perturbed("SiT-Mini/2-VCA"), tmp_path / "model.safetensors", vae=tiny_vae, sampler=sampler)
    main([path, str(tmp_path / "pipe")])  # the VAE: the one the export records
    assert "trust_remote_code=True" in capsys.readouterr().out
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == ["gen_pipeline", "GenPipeline"] and index["sampler"] == sampler
    with pytest.raises(SystemExit) as stopped:
        run_command(main, [str(tmp_path / "missing.safetensors"), str(tmp_path / "out")])
    assert stopped.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("into", ["the run folder", "a folder of photos", "a file"])
def test_an_export_never_deletes_what_it_did_not_write(tmp_path, tiny_vae, capsys, into):
    run = tmp_path / "run"
    (run / "ckpt" / "0000002").mkdir(parents=True)
    (run / "log.jsonl").write_text('{"step": 1}\n')
    save_pretrained(perturbed("SiT-Mini/2"), run / "model.safetensors", vae=tiny_vae)
    target = {"the run folder": run, "a folder of photos": tmp_path / "photos", "a file": tmp_path / "notes.txt"}[into]
    if into == "a folder of photos":
        target.mkdir()
        (target / "holiday.jpg").write_bytes(b"jpeg")
    if into == "a file":
        target.write_text("notes")
    before = {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")}
    with pytest.raises(SystemExit) as stopped:
        run_command(main, [str(run / "model.safetensors"), str(target)])
    error = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(error.splitlines()) == 1 and "give a new" in error
    assert {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")} == before


@pytest.mark.parametrize("process", [{}, dict(noise_schedule="cosine", predict_xstart=True, diffusion_steps=500)],
                         ids=["dit", "cosine-x0-500"])
def test_the_scheduler_records_the_diffusion_the_model_was_trained_with(process):
    scheduler = dit_scheduler(process)
    ours = create_diffusion("", **{**DIFFUSION_DEFAULTS, **process})
    np.testing.assert_allclose(scheduler.alphas_cumprod.double().numpy(), ours.alphas_cumprod, rtol=1e-4)
    assert scheduler.config.prediction_type == ("sample" if process else "epsilon")
