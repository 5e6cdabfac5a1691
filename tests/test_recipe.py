"""The 2026 recipe's objective and sampling options equal their anchors' code on fixed inputs
(tests/fixtures/recipe_anchors.safetensors, recorded from LightningDiT and REPA): logit-normal times, the cosine
velocity term, the time shift and interval guidance; and the options train and sample end to end."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tolerances import ARITHMETIC, NETWORK, assert_close_to_recorded

from gen.diffusion import create_diffusion, create_transport
from gen.diffusion.losses import DiffusionLoss, TransportLoss, logit_normal, velocity_direction_loss

ANCHORS = os.path.join(os.path.dirname(__file__), "fixtures", "recipe_anchors.safetensors")


@pytest.fixture(scope="module")
def anchors():
    return load_file(ANCHORS)


def test_lognormal_times_are_lightningdits_and_repas(anchors):
    assert_close_to_recorded(logit_normal(anchors["lognormal.normals"].float()), anchors["lognormal.t"], ARITHMETIC,
                             "LightningDiT's sample_logit_normal")
    # REPA draws sigmoid(n) in its own time (1 = noise): in SiT's (1 = data) that is 1 - t, the same distribution
    assert_close_to_recorded(logit_normal(anchors["repa_lognormal.normals"]), anchors["repa_lognormal.time"],
                             ARITHMETIC, "REPA's lognormal weighting")


def test_the_cosine_term_is_lightningdits(anchors):
    transport = create_transport("Linear", "velocity")
    x1 = anchors["cos_loss.x1"]
    terms = transport.training_losses(lambda xt, t, **kwargs: torch.sin(xt) + t.view(-1, 1, 1, 1) * xt, x1,
                                      t=anchors["cos_loss.t"], x0=anchors["cos_loss.x0"])
    assert_close_to_recorded(terms["loss"], anchors["cos_loss.loss"], NETWORK, "the MSE term")
    assert_close_to_recorded(velocity_direction_loss(terms["pred"], terms["target"]), anchors["cos_loss.cos"], NETWORK,
                             "the cosine term")


class Recorder(torch.nn.Module):
    """A 'network' that records the times it is asked about and predicts a fixed field."""

    def __init__(self):
        super().__init__()
        self.times = []

    def forward(self, x, t, y=None):
        self.times.append(t.detach().float())
        return torch.tanh(x) + 0 * t.view(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize("path", ["Linear", "GVP"])
def test_sit_lognormal_training_draws_mid_times_and_adds_the_cosine_term(path):
    torch.manual_seed(0)
    x, y = torch.randn(4096, 2, 2, 2), torch.zeros(4096, dtype=torch.long)
    transport = create_transport(path, "velocity")
    recorder = Recorder()
    plain = TransportLoss(transport)(recorder, x, y)
    recorder_ln = Recorder()
    torch.manual_seed(0)
    both = TransportLoss(transport, "lognormal", cos_loss=True)(recorder_ln, x, y)
    uniform, lognormal = recorder.times[0], recorder_ln.times[0]
    middle = lambda t: ((t > 0.25) & (t < 0.75)).float().mean()  # noqa: E731
    assert abs(middle(uniform) - 0.5) < 0.03 and abs(middle(lognormal) - 0.728) < 0.03  # P(|n| < ln 3) = 0.728
    assert both.shape == plain.shape == (4096,) and (both > 0).all()


def test_dit_lognormal_steps_follow_the_chain():
    diffusion = create_diffusion("", learn_sigma=False)
    seen = []

    def model(x, t, y):
        seen.append(t)
        return torch.zeros_like(x)

    torch.manual_seed(0)
    DiffusionLoss(diffusion, "lognormal")(model, torch.randn(4096, 1, 2, 2), torch.zeros(4096, dtype=torch.long))
    steps = seen[0].float()
    assert 0 <= steps.min() and steps.max() <= 999 and abs(steps.mean() - 499.5) < 15
    assert abs(((steps > 250) & (steps < 750)).float().mean() - 0.728) < 0.03


class FieldModel(torch.nn.Module):
    """REPA's test field (tests/fixtures/record_recipe_anchors.py) as a SiT network: SiT's time is 1 - REPA's and its
    velocity the opposite; guidance on every channel, as REPA guides."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"num_classes": 1000, "family": "SiT"})()

    def forward(self, x, t, y):
        tau = 1 - t
        scale = 1 + 0.1 * y.to(x.dtype).view(-1, 1, 1, 1) - 0.05 * (y == 1000).to(x.dtype).view(-1, 1, 1, 1)
        return -(torch.tanh(x) * scale - tau.view(-1, 1, 1, 1) * x)

    def forward_with_cfg(self, x, t, y, cfg_scale):
        cond, uncond = self.forward(x, t, y).chunk(2)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([guided, guided])


def test_interval_guidance_is_repas(anchors):
    from gen.family import make_sampler, noise_level_of
    from gen.sampling import generate_latents, guided_within

    euler = make_sampler("SiT", "ODE", 11, sampling_method="euler")  # 10 Euler steps, as REPA's num_steps=10
    sample_fn = guided_within(euler, 0.0, 0.7, noise_level_of("SiT"))
    out = generate_latents(FieldModel(), anchors["interval.y"], anchors["interval.noise"], sample_fn, cfg_scale=1.8)
    assert_close_to_recorded(out, anchors["interval.out"], ARITHMETIC, "REPA's euler_sampler with guidance_high 0.7")
    everywhere = generate_latents(FieldModel(), anchors["interval.y"], anchors["interval.noise"], euler, cfg_scale=1.8)
    assert (everywhere - anchors["interval.out"]).abs().max() > 1e-3  # the interval changes the result


def test_time_shift_is_lightningdits(anchors):
    from gen.diffusion.transport.integrators import shifted_times

    grid = shifted_times(torch.linspace(0, 1, 11), 0.3)
    assert_close_to_recorded(grid, anchors["time_shift.t"], ARITHMETIC, "LightningDiT's timestep_shift 0.3")
    assert torch.equal(shifted_times(torch.linspace(0, 1, 11), 0.0), torch.linspace(0, 1, 11))


# -- end to end: each option trains on the digits and samples from its export with nothing else said -------------
RECIPE_RUN = ["--image-size", "8", "--num-classes", "10", "--global-batch-size", "8", "--num-workers", "0",
              "--vae", "none", "--log-every", "1", "--sample-every", "0", "--max-steps", "2", "--ckpt-every", "2",
              "--log-with", "none", "--final-samples", "0", "--weighting", "lognormal", "--adam-beta2", "0.95",
              "--qk-norm", "--rope", "--swiglu", "--rmsnorm", "--guidance-high", "0.7", "--cfg-scale", "1.5"]


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
@pytest.mark.parametrize("family, extra", [
    ("DiT", ["--model", "DiT-Mini/2-VCA", "--sampler", "ddim", "--num-sampling-steps", "4"]),
    ("SiT", ["--model", "SiT-Mini/2", "--cos-loss", "--time-shift", "0.3", "--sampling-method", "euler",
             "--num-sampling-steps", "4"])])
def test_the_recipe_trains_and_its_export_samples_as_it_was_trained(tmp_path, family, extra):
    import sample
    import train_dit
    import train_sit
    from common.cli import run_command
    from gen.weights.export import load_pretrained, read_settings

    script = train_dit if family == "DiT" else train_sit
    run_command(script.main, [*RECIPE_RUN, *extra, "--results-dir", str(tmp_path / "run")])
    export = tmp_path / "run" / "model.safetensors"
    model, recorded = load_pretrained(export), read_settings(export)
    assert model.config.lightning_blocks() == ["qk_norm", "rope", "swiglu", "rmsnorm"]
    assert recorded["sampler"]["guidance_high"] == 0.7 and recorded["sampler"]["cfg_scale"] == 1.5
    assert recorded["sampler"].get("time_shift", 0.0) == (0.3 if family == "SiT" else 0.0)
    arguments = json.loads((tmp_path / "run" / "args.json").read_text())
    assert arguments["weighting"] == "lognormal" and arguments["adam_beta2"] == 0.95
    run_command(sample.main, ["--ckpt", str(export), "--num-fid-samples", "4", "--sample-dir", str(tmp_path / "s")])
    settings = json.loads((tmp_path / "s" / "sample_settings.json").read_text())
    assert settings["guidance_high"] == 0.7 and settings["num_sampling_steps"] == 4
    assert np.load(tmp_path / "s" / "samples.npz")["arr_0"].shape == (4, 8, 8, 3)


ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.parametrize("name", sorted(name for name in os.listdir(os.path.join(ROOT, "configs"))
                                        if not name.startswith("study")))
def test_every_training_preset_reads_as_its_scripts_flags(name):
    import yaml

    from gen.models.zoo import model_config
    from gen.training.entry import parse_training_flags

    path = os.path.join(ROOT, "configs", name)
    values = yaml.safe_load(open(path))
    settings = parse_training_flags(model_config(values["model"]).family, ["--config", path])
    assert all(getattr(settings, key) == value for key, value in values.items()), name


@pytest.mark.parametrize("plain_name, vca_name", [("sit-b2-lightning-256", "sit-b2-vca-lightning-256"),
                                                  ("sit-xl2-repa-256", "sit-xl2-vca-repa-256")])
def test_the_recipe_presets_are_twins(plain_name, vca_name):
    import yaml

    plain, vca = (yaml.safe_load(open(os.path.join(ROOT, "configs", f"{name}.yaml")))
                  for name in (plain_name, vca_name))
    differing = {key for key in plain if plain[key] != vca[key]}
    assert differing == {"model", "results_dir"} and vca["model"] == plain["model"] + "-VCA"
    if "lightning" in plain_name:
        assert plain["weighting"] == "lognormal" and plain["rope"] and plain["guidance_high"] == 0.89
    else:
        assert (plain["enc_type"], plain["encoder_depth"], plain["proj_coeff"]) == ("dinov2-vit-b", 8, 0.5)


# -- autoguidance --------------------------------------------------------------------------------------------------
def test_autoguidance_extrapolates_from_the_guide_to_the_model():
    from tiny import perturbed

    from gen.sampling import guided
    from gen.sampling.autoguidance import Autoguided

    torch.manual_seed(0)
    model, guide = perturbed("DiT-Mini/2", num_classes=3), perturbed("DiT-Mini/2", num_classes=3, seed=1)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.tensor([0, 2])
    with torch.no_grad():
        out = guided(Autoguided(model, guide), y, cfg_scale=2.5)(x, t)
        mine, theirs = model(x, t, y), guide(x, t, y)
        itself = guided(Autoguided(model, model), y, cfg_scale=2.5)(x, t)
    assert (mine - theirs).abs().max() > 1e-3  # two different networks
    torch.testing.assert_close(out[:, :3], theirs[:, :3] + 2.5 * (mine[:, :3] - theirs[:, :3]))
    torch.testing.assert_close(out[:, 3:], mine[:, 3:])  # DiT guides 3 channels; the rest are the model's
    torch.testing.assert_close(itself, mine)  # a model guided by itself is itself, at any scale


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
def test_sample_py_takes_a_guide_of_the_same_data_and_refuses_another(tmp_path, capsys):
    from tiny import perturbed

    import sample
    from common.cli import run_command
    from gen import save_pretrained

    model = save_pretrained(perturbed("SiT-Mini/2", in_channels=3, num_classes=3), tmp_path / "model.safetensors")
    guide = save_pretrained(perturbed("SiT-Mini/4", in_channels=3, num_classes=3), tmp_path / "guide.safetensors")
    other = save_pretrained(perturbed("SiT-Mini/4", in_channels=3, num_classes=5), tmp_path / "other.safetensors")
    common = ["--ckpt", model, "--num-sampling-steps", "3", "--sampling-method", "euler", "--cfg-scale", "2",
              "--class-labels", "0", "1"]
    run_command(sample.main, [*common, "--output", str(tmp_path / "plain.png")])
    run_command(sample.main, [*common, "--guide-ckpt", guide, "--output", str(tmp_path / "guided.png")])
    assert (tmp_path / "guided.png").read_bytes() != (tmp_path / "plain.png").read_bytes()
    with pytest.raises(SystemExit) as stop:
        run_command(sample.main, [*common, "--guide-ckpt", other, "--output", str(tmp_path / "x.png")])
    assert stop.value.code == 2 and "{'num_classes': 5}" in capsys.readouterr().err


def test_channel_statistics_are_lightningdits(image_folder, tiny_vae, tmp_path):
    """Over a whole latent set, the statistics are LightningDiT's compute_latent_stats (mean and torch.std over items,
    rows and columns per channel); normalising and decoding undo each other through the VAE."""
    from safetensors.torch import load_file as read_shard

    import extract_latents
    from common.cli import run_command
    from gen.data import LatentDataset
    from gen.data.statistics import channel_statistics
    from gen.vae import decode, load_vae, normalize, use_channel_norm

    run_command(extract_latents.main, ["--data-path", image_folder, "--output", str(tmp_path / "latents"),
                                       "--image-size", "16", "--vae", tiny_vae, "--num-workers", "0",
                                       "--dtype", "float32"])
    dataset = LatentDataset(str(tmp_path / "latents"))
    norm = channel_statistics(dataset, None, from_latents=True, device="cpu", seed=0)
    latents = read_shard(str(tmp_path / "latents" / "shard-00000.safetensors"))["latents"][:, 0]  # unflipped
    assert torch.allclose(torch.tensor(norm.mean), latents.mean(dim=[0, 2, 3]), atol=1e-6)
    assert torch.allclose(torch.tensor(norm.std), latents.std(dim=[0, 2, 3]), atol=1e-6)

    vae = load_vae(tiny_vae)
    plain = decode(vae, latents[:2])
    use_channel_norm(vae, norm)
    whole = normalize(vae, latents)
    assert torch.allclose(whole.mean(dim=[0, 2, 3]), torch.zeros(4), atol=1e-5)
    assert torch.allclose(whole.std(dim=[0, 2, 3]), torch.ones(4), atol=1e-5)
    assert torch.allclose(decode(vae, whole[:2]), plain, atol=1e-5)
    assert not torch.allclose(decode(vae, latents[:2]), plain, atol=1e-3)  # the decoder does undo the norm


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
def test_a_channel_normalised_run_records_its_statistics_and_samples_with_them(image_folder, tiny_vae, tmp_path):
    from tiny import perturbed

    import sample
    import train_sit
    from common.cli import run_command
    from common.errors import UserError
    from gen.hub.diffusers_format import main as diffusers_main
    from gen.hub.diffusers_format import save_diffusers_pipeline
    from gen.weights.export import read_settings, save_pretrained
    from gen.weights.loading import load_for_sampling

    run = tmp_path / "run"
    run_command(train_sit.main, ["--model", "SiT-Mini/2", "--data-path", image_folder, "--image-size", "16",
                                 "--vae", tiny_vae, "--num-classes", "3", "--global-batch-size", "4",
                                 "--num-workers", "0", "--log-every", "1", "--sample-every", "0", "--max-steps", "2",
                                 "--ckpt-every", "2", "--log-with", "none", "--final-samples", "0",
                                 "--latent-norm", "channel", "--sampling-method", "euler", "--num-sampling-steps", "3",
                                 "--results-dir", str(run)])
    norm = read_settings(run / "model.safetensors")["latent_norm"]
    assert len(norm.mean) == 4 and all(value > 0 for value in norm.std)
    assert "latent statistics per channel" in (run / "log.txt").read_text()
    assert load_for_sampling(run / "model.safetensors", "cpu", vae=tiny_vae).vae.channel_norm == norm
    run_command(sample.main, ["--ckpt", str(run / "model.safetensors"), "--vae", tiny_vae, "--num-fid-samples", "2",
                              "--sample-dir", str(tmp_path / "s")])
    assert np.load(tmp_path / "s" / "samples.npz")["arr_0"].shape == (2, 16, 16, 3)
    with pytest.raises(Exception, match="--latent-norm channel, whose statistics diffusers pipeline folders do not"):
        save_diffusers_pipeline(str(run / "model.safetensors"), tiny_vae, str(tmp_path / "pipe"))
    with pytest.raises(UserError, match="--latent-norm channel, whose statistics"):  # before any VAE loads
        diffusers_main([str(run / "model.safetensors"), str(tmp_path / "pipe"), "--vae", "ema"])
    guide = save_pretrained(perturbed("SiT-Mini/2", input_size=8, in_channels=4, num_classes=3),
                            tmp_path / "guide.safetensors", vae=tiny_vae)
    with pytest.raises(UserError, match="normalised otherwise than"):  # a guide of the scalar latent space
        sample.main(["--ckpt", str(run / "model.safetensors"), "--vae", tiny_vae, "--guide-ckpt", str(guide),
                     "--output", str(tmp_path / "guided.png")])


def test_the_latent_norm_is_fixed_on_resume_and_old_checkpoints_were_scalar():
    from gen.training.checkpoint import resume_differences

    refused, _ = resume_differences({"model": "SiT-B/2"}, {"model": "SiT-B/2", "latent_norm": "channel"})
    assert refused == {"latent_norm": ("scalar", "channel")}
    assert resume_differences({"latent_norm": "channel"}, {"latent_norm": "channel"}) == ({}, {})
