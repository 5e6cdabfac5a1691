"""SiT transport: eps rules, paths and losses against SiT's recorded values, closed-form identities of the
interpolants, and the tiny official SiT driven through training_losses and the ODE samplers as SiT did."""
import json
from pathlib import Path

import pytest
import torch
from gmm import DTYPE, three_blobs
from official import tiny_official_model
from safetensors.torch import load_file
from tolerances import ARITHMETIC, CHAIN, NETWORK, assert_close_to_recorded

from gen.diffusion import ModelType, PathType, Sampler, Transport, WeightType, create_transport

FIXTURES = Path(__file__).parent / "fixtures"
PATH_TYPES = ["Linear", "GVP", "VP"]
PREDICTIONS = ["velocity", "noise", "score"]
LOSS_WEIGHTS = [None, "velocity", "likelihood"]
# SiT's fixtures record velocity prediction with loss weight None only (the weight does not apply to it)
COMBINATIONS = [(p, m, w) for p in PATH_TYPES for m in PREDICTIONS for w in LOSS_WEIGHTS
                if m != "velocity" or w is None]


def key(path_type, prediction, loss_weight):
    return f"{path_type}.{prediction}.{loss_weight or 'none'}"


@pytest.fixture(scope="module")
def sit():
    return load_file(FIXTURES / "sit_transport.safetensors")


# ----------------------------------------------------------------------------------------- create_transport


@pytest.mark.parametrize("path_type, prediction, loss_weight", COMBINATIONS)
def test_eps_rules_match_sit(path_type, prediction, loss_weight):
    expected = json.loads((FIXTURES / "fixtures.json").read_text())["sit_eps"][key(path_type, prediction,
                                                                                    loss_weight)]
    transport = create_transport(path_type, prediction, loss_weight)
    assert (transport.train_eps, transport.sample_eps) == (expected["train_eps"], expected["sample_eps"])


def test_eps_given_explicitly():
    vp = create_transport("VP", train_eps=1e-4, sample_eps=1e-2)
    assert (vp.train_eps, vp.sample_eps) == (1e-4, 1e-2)
    noise = create_transport("GVP", "noise", train_eps=1e-5, sample_eps=1e-3)  # SiT's command-line defaults
    assert (noise.train_eps, noise.sample_eps) == (1e-5, 1e-3)
    velocity = create_transport("Linear", "velocity", train_eps=1e-5, sample_eps=1e-3)
    assert (velocity.train_eps, velocity.sample_eps) == (0, 0)  # finite everywhere: SiT ignores them


def test_create_transport_names():
    transport = create_transport("GVP", "score", "likelihood")
    assert isinstance(transport, Transport)
    assert (transport.path_type, transport.model_type, transport.loss_type) == (
        PathType.GVP, ModelType.SCORE, WeightType.LIKELIHOOD)
    for bad in [dict(path_type="linear"), dict(prediction="eps"), dict(loss_weight="none")]:
        with pytest.raises(ValueError):
            create_transport(**bad)


def test_check_interval_follows_sit():
    linear_velocity, linear_noise = create_transport("Linear"), create_transport("Linear", "noise")
    vp = create_transport("VP")
    assert linear_velocity.check_interval(0, 0, eval=True) == (0, 1)
    assert linear_noise.check_interval(1e-3, 1e-3, eval=True) == (1e-3, 1 - 1e-3)
    assert vp.check_interval(1e-5, 1e-3, eval=True) == (0, 1 - 1e-3)
    assert vp.check_interval(1e-5, 1e-3, eval=False) == (0, 1 - 1e-5)
    assert vp.check_interval(1e-5, 1e-3, eval=True, reverse=True) == (1, 1 - (1 - 1e-3))
    # SDE: the last step takes the place of the end eps; SBDM's diffusion needs t0 > 0
    assert linear_noise.check_interval(1e-3, 1e-3, eval=True, sde=True, last_step_size=0.04) == (1e-3, 0.96)
    assert linear_velocity.check_interval(0, 0, eval=True, sde=True, last_step_size=0.04,
                                          diffusion_form="sigma") == (0, 0.96)


# ----------------------------------------------------------------------------------------------- the paths


@pytest.mark.parametrize("path_type, prediction, loss_weight", COMBINATIONS)
def test_plan_matches_sit(sit, path_type, prediction, loss_weight):
    transport = create_transport(path_type, prediction, loss_weight)
    t, xt, ut = transport.path.plan(sit["sit.in.t"], sit["sit.in.x0"], sit["sit.in.x1"])
    name = key(path_type, prediction, loss_weight)
    assert_close_to_recorded(xt, sit[f"{name}.plan.xt"], ARITHMETIC, "xt")
    assert_close_to_recorded(ut, sit[f"{name}.plan.ut"], ARITHMETIC, "ut")


@pytest.mark.parametrize("path_type", PATH_TYPES)
def test_path_identities(path_type):
    """u_t is dx_t/dt; alpha and sigma run from noise to data; velocity <-> score round-trips; VP's
    closed-form score coefficient is the general one."""
    path = create_transport(path_type).path
    t = torch.linspace(0.05, 0.95, 7, dtype=DTYPE)
    x0, x1 = torch.randn(7, 3, dtype=DTYPE), torch.randn(7, 3, dtype=DTYPE)
    h = 1e-6
    _, xt_plus, _ = path.plan(t + h, x0, x1)
    _, xt_minus, _ = path.plan(t - h, x0, x1)
    _, _, ut = path.plan(t, x0, x1)
    torch.testing.assert_close(ut, (xt_plus - xt_minus) / (2 * h), rtol=1e-6, atol=1e-6)
    ends = torch.tensor([1e-12, 1.0], dtype=DTYPE)
    torch.testing.assert_close(path.alpha(ends)[0], torch.tensor([0.0, 1.0], dtype=DTYPE), atol=0.01, rtol=0)
    torch.testing.assert_close(path.sigma(ends)[0], torch.tensor([1.0, 0.0], dtype=DTYPE), atol=0.01, rtol=0)

    score = torch.randn(7, 3, dtype=DTYPE)
    xt = torch.randn(7, 3, dtype=DTYPE)
    velocity = path.velocity_from_score(score, xt, t)
    torch.testing.assert_close(path.score_from_velocity(velocity, xt, t), score)
    sigma_t, d_sigma_t = path.sigma(t)
    general = path.d_log_alpha(t) * sigma_t**2 - sigma_t * d_sigma_t
    torch.testing.assert_close(path.score_coefficient(t), general)


def test_diffusion_forms():
    path = create_transport("Linear").path
    x, t = torch.zeros(2, 1), torch.tensor([0.25, 0.5])
    expected = {
        "constant": [2.0, 2.0],
        "SBDM": 2 * (1 - t) / t,  # lambda_t for Linear
        "sigma": 2 * (1 - t),
        "linear": 2 * (1 - t),
        "decreasing": 0.25 * (2 * torch.cos(torch.pi * t) + 1) ** 2,
        "increasing-decreasing": 2 * torch.sin(torch.pi * t) ** 2,
    }
    for form, values in expected.items():
        got = path.diffusion(x, t, form=form, norm=2.0)
        torch.testing.assert_close(got.reshape(2), torch.as_tensor(values, dtype=got.dtype))
    with pytest.raises(ValueError):
        path.diffusion(x, t, form="cosine")


# -------------------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("path_type, prediction, loss_weight", COMBINATIONS)
def test_loss_is_zero_for_the_exact_target_only(path_type, prediction, loss_weight):
    transport = create_transport(path_type, prediction, loss_weight)
    torch.manual_seed(0)
    x1, x0 = torch.randn(4, 2, 3, 3, dtype=DTYPE), torch.randn(4, 2, 3, 3, dtype=DTYPE)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=DTYPE)
    _, _, ut = transport.path.plan(t, x0, x1)
    sigma_t = transport.path.sigma(t)[0][:, None, None, None]
    target = {"velocity": ut, "noise": x0, "score": -x0 / sigma_t}[prediction]
    exact = transport.training_losses(lambda xt, t_: target, x1, t=t, x0=x0)
    torch.testing.assert_close(exact["loss"], torch.zeros(4, dtype=DTYPE), atol=1e-20, rtol=0)
    assert (transport.training_losses(lambda xt, t_: target + 0.1, x1, t=t, x0=x0)["loss"] > 1e-4).all()


@pytest.mark.parametrize("path_type", PATH_TYPES)
@pytest.mark.parametrize("prediction", ["noise", "score"])
def test_velocity_weight_measures_the_implied_velocity_error(path_type, prediction):
    """loss_weight="velocity" makes a noise or score loss the squared error of the velocity it implies."""
    transport = create_transport(path_type, prediction, "velocity")
    x1, x0 = torch.randn(3, 4, dtype=DTYPE), torch.randn(3, 4, dtype=DTYPE)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=DTYPE)
    _, xt, _ = transport.path.plan(t, x0, x1)
    sigma_t = transport.path.sigma(t)[0][:, None]
    exact = x0 if prediction == "noise" else -x0 / sigma_t
    guess = exact + 0.3 * torch.randn_like(exact)
    loss = transport.training_losses(lambda xt_, t_: guess, x1, t=t, x0=x0)["loss"]
    velocity = transport.velocity_from_output
    velocity_error = velocity(guess, xt, t) - velocity(exact, xt, t)
    torch.testing.assert_close(loss, velocity_error.pow(2).mean(dim=1))


def test_training_losses_samples_t_on_the_training_interval():
    transport = create_transport("VP", "noise")
    seen = []

    def model(xt, t):
        seen.append(t)
        return torch.zeros_like(xt)

    torch.manual_seed(0)
    losses = transport.training_losses(model, torch.randn(512, 2), model_kwargs={})
    assert losses["loss"].shape == (512,)
    assert 0 <= seen[0].min() and seen[0].max() <= 1 - 1e-5 and seen[0].max() > 0.99


# ----------------------------------------------------------------------------------------------- samplers


def gmm_velocity_model(path):
    mixture = three_blobs()

    def model(x, t):
        (alpha, d_alpha), (sigma, d_sigma) = path.alpha(t), path.sigma(t)
        data, noise = mixture.posterior_means(x, alpha, sigma)
        return d_alpha[:, None] * data + d_sigma[:, None] * noise

    return mixture, model


def test_reverse_ode_inverts_the_forward_ode():
    transport = create_transport("Linear")
    _, model = gmm_velocity_model(transport.path)
    sampler = Sampler(transport)
    noise = torch.randn(64, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    data = sampler.sample_ode(atol=1e-9, rtol=1e-9)(noise, model)[-1]
    back = sampler.sample_ode(atol=1e-9, rtol=1e-9, reverse=True)(data, model)
    assert back.shape == (50, 64, 2)
    torch.testing.assert_close(back[-1], noise, atol=1e-5, rtol=0)


def test_tweedie_last_step_is_the_posterior_mean():
    transport = create_transport("GVP", "velocity")
    mixture, model = gmm_velocity_model(transport.path)
    sampler = Sampler(transport)
    tweedie = sampler.last_step_fn(sampler.sde_drift("sigma", 1.0), "Tweedie", 0.04)
    x, t = torch.randn(8, 2, dtype=DTYPE), torch.full((8,), 0.9, dtype=DTYPE)
    alpha, sigma = transport.path.alpha(t)[0], transport.path.sigma(t)[0]
    torch.testing.assert_close(tweedie(x, t, model), mixture.posterior_means(x, alpha, sigma)[0])


def test_sde_returns_num_steps_states_and_rejects_unknown_options():
    transport = create_transport("Linear", "score")
    sampler = Sampler(transport)

    def model(x, t):
        return -x  # the score of N(0, I)

    for last_step in ["Mean", "Tweedie", "Euler", None]:
        states = sampler.sample_sde(last_step=last_step, num_steps=20)(torch.randn(3, 2), model)
        assert len(states) == 20 and all(s.shape == (3, 2) for s in states)
        assert all(torch.isfinite(s).all() for s in states)
    with pytest.raises(ValueError):
        sampler.sample_sde(sampling_method="RK4")
    with pytest.raises(ValueError):
        sampler.sample_sde(last_step="Median")
    with pytest.raises(ValueError):
        sampler.sample_sde(diffusion_form="cosine")
    with pytest.raises(ValueError, match="infinite"):  # lambda_t ~ 1/t: SiT's SBDM default at t0 = 0
        Sampler(create_transport("Linear", "velocity")).sample_sde(diffusion_form="SBDM")
    assert Sampler(create_transport("VP", "velocity")).sample_sde(diffusion_form="SBDM")  # beta_0/2 is finite


# -------------------------------------------------------------------------- the tiny official SiT, as SiT


@pytest.fixture(scope="module")
def sit_network():
    return tiny_official_model("sit")


@pytest.mark.parametrize("path_type, prediction, loss_weight", COMBINATIONS)
def test_training_losses_match_sit(sit, sit_network, path_type, prediction, loss_weight):
    """SiT's loss with its sampled (t, x0) fixed to the recorded ones, passed in as t= and x0=."""
    transport = create_transport(path_type, prediction, loss_weight)
    with torch.no_grad():
        losses = transport.training_losses(sit_network, sit["sit.in.x1"], dict(y=sit["sit.in.y"]),
                                           t=sit["sit.in.t"], x0=sit["sit.in.x0"])
    expected = sit[f"{key(path_type, prediction, loss_weight)}.training_losses.loss"]
    # noise and score predictions divide by sigma(t), which amplifies rounding near the data end
    assert_close_to_recorded(losses["loss"], expected, NETWORK if prediction == "velocity" else CHAIN, "loss")


ODE_KEYS = [name for name in load_file(FIXTURES / "sit_transport.safetensors") if ".ode." in name]


@pytest.mark.parametrize("name", ODE_KEYS)
def test_ode_samples_match_sit(sit, sit_network, name):
    """Sampler.sample_ode(method, num_steps, atol=rtol=1e-8) from the recorded noise. euler and heun3 are
    fixed-grid: the same 9 steps, so only float32 rounding (grown over up to 27 network calls) separates
    us from SiT. dopri5 is adaptive: rounding may change its step choices, but at 1e-8 tolerances any
    accepted path solves the ODE to far better than the 1e-3 allowed."""
    path_type, prediction, loss_weight, _, method, num_steps = name.split(".")
    transport = create_transport(path_type, prediction, None if loss_weight == "none" else loss_weight)
    sample_fn = Sampler(transport).sample_ode(sampling_method=method, num_steps=int(num_steps), atol=1e-8,
                                              rtol=1e-8)
    trajectory = sample_fn(sit["sit.in.x0"], sit_network, y=sit["sit.in.y"])
    assert trajectory.shape == (int(num_steps), *sit["sit.in.x0"].shape)
    assert_close_to_recorded(trajectory[-1], sit[name], CHAIN, "sample")


def test_guidance_scale_one_is_the_conditional_model(sit, sit_network):
    """Through SiT's forward_with_cfg, scale 1 gives the conditional model's ODE sample; scale 4 does not."""
    noise, y = sit["sit.in.x0"], sit["sit.in.y"]
    sample_fn = Sampler(create_transport()).sample_ode(sampling_method="heun2", num_steps=10)
    conditional = sample_fn(noise, sit_network, y=y)[-1]
    doubled_noise, y_cfg = torch.cat([noise, noise]), torch.cat([y, torch.full_like(y, 10)])
    guided_1 = sample_fn(doubled_noise, sit_network.forward_with_cfg, y=y_cfg, cfg_scale=1.0)[-1]
    guided_4 = sample_fn(doubled_noise, sit_network.forward_with_cfg, y=y_cfg, cfg_scale=4.0)[-1]
    torch.testing.assert_close(guided_1[:len(noise)], conditional, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(guided_4[:len(noise)], conditional, rtol=1e-2, atol=1e-2)
