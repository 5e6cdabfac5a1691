"""ADM Gaussian diffusion: schedules and respacing against DiT's recorded values, closed-form identities,
losses, and the tiny official DiT driven through p_mean_variance / training_losses / DDIM as DiT did."""
from pathlib import Path

import numpy as np
import pytest
import torch
from official import tiny_official_model
from safetensors.numpy import load_file
from tolerances import ARITHMETIC, CHAIN, NETWORK, assert_close_to_recorded

from gen.diffusion import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    SpacedDiffusion,
    create_diffusion,
    space_timesteps,
)

FIXTURES = Path(__file__).parent / "fixtures"
SCHEDULE_KEYS = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                 "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"]


@pytest.fixture(scope="module")
def adm():
    return {k: torch.from_numpy(v) if v.dtype != np.float64 else v
            for k, v in load_file(FIXTURES / "adm_diffusion.safetensors").items()}


# ------------------------------------------------------------------------------------ schedules, respacing


@pytest.mark.parametrize("key", SCHEDULE_KEYS)
def test_schedule_matches_dit(adm, key):
    ours = getattr(create_diffusion(""), key)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, adm[f"adm1000.{key}"], rtol=1e-13, atol=0)


@pytest.mark.parametrize("respacing, name", [("250", "adm250"), ("ddim50", "admddim50")])
def test_respaced_chain_matches_dit(adm, respacing, name):
    diffusion = create_diffusion(respacing)
    assert isinstance(diffusion, SpacedDiffusion)
    np.testing.assert_array_equal(diffusion.timestep_map, adm[f"{name}.timestep_map"].numpy())
    np.testing.assert_allclose(diffusion.betas, adm[f"{name}.betas"], rtol=1e-13, atol=0)
    # the respaced chain keeps the base chain's noise levels at the kept steps
    base = create_diffusion("")
    kept = base.alphas_cumprod[diffusion.timestep_map]
    np.testing.assert_allclose(diffusion.alphas_cumprod, kept, rtol=1e-12)


def test_space_timesteps_sections():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(100, "ddim10") == set(range(0, 100, 10))
    # "10,20": the first half of 300 steps strided to 10 (both ends kept), the second half to 20
    steps = sorted(space_timesteps(300, "10,20"))
    assert len(steps) == 30
    assert steps[0] == 0 and steps[9] == 149 and steps[10] == 150 and steps[-1] == 299
    assert sorted(space_timesteps(300, [10, 15, 20]))[:2] == [0, 11]
    assert space_timesteps(1000, "1000") == set(range(1000))
    with pytest.raises(ValueError):
        space_timesteps(100, "60,60")
    with pytest.raises(ValueError):
        space_timesteps(10, "ddim6")  # no integer stride gives exactly 6 of 10 steps


def test_linear_schedule_rescales_with_steps():
    betas = create_diffusion("", diffusion_steps=500).betas
    np.testing.assert_allclose(betas[[0, -1]], [2e-4, 4e-2])


def test_cosine_schedule_follows_alpha_bar():
    diffusion = create_diffusion("", noise_schedule="cosine")
    t = np.arange(1, 1001) / 1000

    def alpha_bar(s):
        return np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2

    uncapped = diffusion.betas < 0.999  # betas are capped at 0.999 at the very end
    assert uncapped[:990].all()
    np.testing.assert_allclose(diffusion.alphas_cumprod[uncapped], (alpha_bar(t) / alpha_bar(0))[uncapped],
                               rtol=1e-9)
    assert diffusion.betas.dtype == np.float64
    diffusers_name = create_diffusion("", noise_schedule="squaredcos_cap_v2")
    np.testing.assert_array_equal(diffusers_name.betas, diffusion.betas)
    with pytest.raises(ValueError):
        create_diffusion("", noise_schedule="quadratic")


def test_create_diffusion_options():
    default = create_diffusion("")
    assert (default.model_mean_type, default.model_var_type, default.loss_type) == (
        ModelMeanType.EPSILON, ModelVarType.LEARNED_RANGE, LossType.MSE)
    assert create_diffusion(None).num_timesteps == 1000
    assert create_diffusion("", use_kl=True).loss_type == LossType.RESCALED_KL
    assert create_diffusion("", rescale_learned_sigmas=True).loss_type == LossType.RESCALED_MSE
    assert create_diffusion("", predict_xstart=True).model_mean_type == ModelMeanType.START_X
    assert create_diffusion("", learn_sigma=False).model_var_type == ModelVarType.FIXED_LARGE
    small = create_diffusion("", learn_sigma=False, sigma_small=True)
    assert small.model_var_type == ModelVarType.FIXED_SMALL


# --------------------------------------------------------------------------------- closed-form identities


def test_q_sample_matches_dit(adm):
    diffusion = create_diffusion("")
    x_t = diffusion.q_sample(adm["adm.in.x_start"], adm["adm.in.t"], noise=adm["adm.in.noise"])
    assert_close_to_recorded(x_t, adm["adm1000.q_sample"], ARITHMETIC, "q_sample")


def test_posterior_is_bayes_rule():
    """q(x_{t-1} | x_t, x_0) ~ q(x_{t-1} | x_0) q(x_t | x_{t-1}): precision-weighted means, computed here
    from alphas_cumprod alone."""
    diffusion = create_diffusion("250")
    t = torch.tensor([1, 5, 100, 249])
    x_start, x_t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    abar = torch.from_numpy(diffusion.alphas_cumprod)[t, None]
    abar_prev = torch.from_numpy(diffusion.alphas_cumprod_prev)[t, None]
    alpha = abar / abar_prev
    precision = 1 / (1 - abar_prev) + alpha / (1 - alpha)
    mean = (abar_prev.sqrt() * x_start / (1 - abar_prev) + alpha.sqrt() * x_t / (1 - alpha)) / precision
    ours_mean, ours_variance, ours_log_variance = diffusion.q_posterior_mean_variance(x_start, x_t, t)
    torch.testing.assert_close(ours_mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours_variance, (1 / precision).expand(4, 3), rtol=1e-10, atol=0)
    torch.testing.assert_close(ours_log_variance, ours_variance.log(), rtol=1e-10, atol=0)


def test_variance_options():
    x, t = torch.zeros(3, 2, dtype=torch.float64), torch.tensor([0, 1, 999])
    eps = torch.zeros(3, 2, dtype=torch.float64)
    learned = create_diffusion("")
    posterior = learned.posterior_variance[[1, 1, 999]]  # index 0 takes index 1's value (clipped)
    betas = learned.betas[[0, 1, 999]]
    for v, expected in [(-1.0, posterior), (1.0, betas)]:
        out = learned.mean_variance_from_output(torch.cat([eps, torch.full_like(eps, v)], 1), x, t)
        np.testing.assert_allclose(out["variance"][:, 0], expected, rtol=1e-12)
    # v = 0 is the geometric mean of the two
    out = learned.mean_variance_from_output(torch.cat([eps, 0 * eps], 1), x, t)
    np.testing.assert_allclose(out["variance"][:, 0], np.sqrt(posterior * betas), rtol=1e-12)
    small = create_diffusion("", learn_sigma=False, sigma_small=True).mean_variance_from_output(eps, x, t)
    np.testing.assert_allclose(small["variance"][:, 0], learned.posterior_variance[[0, 1, 999]], rtol=1e-12)
    large = create_diffusion("", learn_sigma=False).mean_variance_from_output(eps, x, t)
    np.testing.assert_allclose(large["variance"][:, 0], [posterior[0], betas[1], betas[2]], rtol=1e-12)


def test_clip_denoised_and_xstart_prediction():
    diffusion = create_diffusion("", predict_xstart=True, learn_sigma=False)
    x, t = torch.zeros(2, 2), torch.tensor([10, 500])
    prediction = torch.tensor([[3.0, -0.5], [-2.0, 0.25]])
    unclipped = diffusion.mean_variance_from_output(prediction, x, t, clip_denoised=False)["pred_xstart"]
    assert torch.equal(unclipped, prediction)
    clipped = diffusion.mean_variance_from_output(prediction, x, t, clip_denoised=True)["pred_xstart"]
    assert torch.equal(clipped, prediction.clamp(-1, 1))


# -------------------------------------------------------------------------------------------------- losses


def noise_model(noise, var_values=None, offset=0.0):
    """A "network" that returns the true noise (+ offset), and variance channels if given."""
    def model(x_t, t, **kwargs):
        eps = noise + offset
        return eps if var_values is None else torch.cat([eps, var_values], dim=1)
    return model


def test_mse_is_zero_for_the_true_noise_only():
    torch.manual_seed(0)
    diffusion = create_diffusion("")
    x_start, noise = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    t = torch.tensor([0, 7, 500, 999])
    var_values = torch.zeros_like(noise)
    exact = diffusion.training_losses(noise_model(noise, var_values), x_start, t, noise=noise)
    assert torch.equal(exact["mse"], torch.zeros(4))
    assert torch.equal(exact["loss"], exact["mse"] + exact["vb"])
    wrong = diffusion.training_losses(noise_model(noise, var_values, offset=0.1), x_start, t, noise=noise)
    torch.testing.assert_close(wrong["mse"], torch.full((4,), 0.01), rtol=1e-4, atol=0)

    xstart_diffusion = create_diffusion("", predict_xstart=True, learn_sigma=False)
    losses = xstart_diffusion.training_losses(lambda x_t, t: x_start, x_start, t, noise=noise)
    assert torch.equal(losses["loss"], torch.zeros(4)) and "vb" not in losses


def test_vb_term_vanishes_for_the_exact_mean_and_posterior_variance():
    """With the true noise and v = -1 (the posterior variance), p(x_{t-1}|x_t) is q(x_{t-1}|x_t,x_0): the
    KL is 0 for t > 0, while t = 0 scores the decoder likelihood instead; a wrong v is penalised."""
    torch.manual_seed(0)
    diffusion = create_diffusion("", rescale_learned_sigmas=False)
    x_start = torch.rand(4, 3, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x_start)
    t = torch.tensor([0, 1, 300, 999])
    exact = diffusion.training_losses(noise_model(noise, -torch.ones_like(noise)), x_start, t, noise=noise)
    torch.testing.assert_close(exact["vb"][1:], torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)
    assert exact["vb"][0] > 0
    wrong = diffusion.training_losses(noise_model(noise, torch.ones_like(noise)), x_start, t, noise=noise)
    assert (wrong["vb"][1:] > 0).all() and wrong["vb"][1] > 0.1  # beta_t and beta~_t differ most early


def test_loss_types_scale_the_bound():
    torch.manual_seed(0)
    x_start, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 40, 1999])
    var_values = torch.rand_like(noise) * 2 - 1
    model = noise_model(noise, var_values, offset=0.3)
    mse = create_diffusion("", diffusion_steps=2000).training_losses(model, x_start, t, noise=noise)
    rescaled = create_diffusion("", diffusion_steps=2000, rescale_learned_sigmas=True).training_losses(
        model, x_start, t, noise=noise)
    kl_diffusion = create_diffusion("", diffusion_steps=2000, use_kl=True)
    kl = kl_diffusion.training_losses(model, x_start, t, noise=noise)
    torch.testing.assert_close(rescaled["vb"], mse["vb"] * 2.0)  # T / 1000
    torch.testing.assert_close(rescaled["mse"], mse["mse"])
    torch.testing.assert_close(kl["loss"], mse["vb"] * 2000)  # the KL loss has no MSE part, rescaled by T
    assert set(kl) == {"loss"}


def test_kl_loss_with_fixed_variance():
    """Plain KL loss (not rescaled) with a fixed-variance diffusion: the bound term itself."""
    diffusion = GaussianDiffusion(betas=create_diffusion("").betas, model_mean_type=ModelMeanType.EPSILON,
                                  model_var_type=ModelVarType.FIXED_SMALL, loss_type=LossType.KL)
    x_start = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x_start)
    t = torch.tensor([5, 600])
    losses = diffusion.training_losses(noise_model(noise), x_start, t, noise=noise)
    torch.testing.assert_close(losses["loss"], torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    wrong = diffusion.training_losses(noise_model(noise, offset=0.1), x_start, t, noise=noise)
    assert (wrong["loss"] > 0).all()


# ------------------------------------------------------------------------------------------------- loops


def test_loops_start_from_the_given_noise_and_yield_every_step():
    diffusion = create_diffusion("ddim10", learn_sigma=False)
    seen_timesteps = []

    def model(x, t):
        seen_timesteps.append(int(t[0]))
        return 0.5 * x

    noise = torch.randn(2, 3)
    steps = list(diffusion.ddim_sample_loop_progressive(model, noise.shape, noise=noise, clip_denoised=False))
    assert len(steps) == 10 and seen_timesteps == list(range(900, -1, -100))
    again = diffusion.ddim_sample_loop(model, noise.shape, noise=noise, clip_denoised=False, progress=True)
    assert torch.equal(again, steps[-1]["sample"])
    other = diffusion.ddim_sample_loop(model, noise.shape, noise=noise + 1, clip_denoised=False)
    assert not torch.allclose(other, again)

    torch.manual_seed(0)
    ddpm = list(diffusion.p_sample_loop_progressive(model, (5, 3), clip_denoised=False, progress=True))
    assert len(ddpm) == 10 and ddpm[-1]["sample"].shape == (5, 3)


def test_last_ddpm_step_adds_no_noise():
    diffusion = create_diffusion("ddim10", learn_sigma=False)
    x, t = torch.randn(3, 2), torch.tensor([0, 0, 0])

    def model(x, t):
        return x

    mean = diffusion.p_mean_variance(model, x, t)["mean"]
    assert torch.equal(diffusion.p_sample(model, x, t)["sample"], mean)
    assert torch.equal(diffusion.ddim_sample(model, x, t, eta=1.0)["sample"],
                       diffusion.ddim_sample(model, x, t, eta=0.0)["sample"])


# -------------------------------------------------------------------------- the tiny official DiT, as DiT




@pytest.fixture(scope="module")
def dit():
    return tiny_official_model("dit")


def test_training_losses_match_dit(adm, dit):
    with torch.no_grad():
        losses = create_diffusion("").training_losses(dit, adm["adm.in.x_start"], adm["adm.in.t"],
                                                      model_kwargs=dict(y=adm["adm.in.y"]),
                                                      noise=adm["adm.in.noise"])
    for term in ["mse", "vb", "loss"]:
        assert_close_to_recorded(losses[term], adm[f"adm1000.training_losses.{term}"], NETWORK, term)


@pytest.mark.parametrize("chain, clip", [("adm1000", False), ("adm1000", True), ("adm250", False),
                                         ("admddim50", False)])
def test_p_mean_variance_matches_dit(adm, dit, chain, clip):
    """At x_t = the recorded q_sample; a respaced chain is indexed by t_index and shows the model
    timestep_map[t_index]."""
    respacing = {"adm1000": "", "adm250": "250", "admddim50": "ddim50"}[chain]
    t = adm["adm.in.t"] if chain == "adm1000" else adm[f"{chain}.p_mean_variance.in.t_index"]
    prefix = f"{chain}.p_mean_variance." + (f"clip{int(clip)}." if chain == "adm1000" else "")
    with torch.no_grad():
        out = create_diffusion(respacing).p_mean_variance(dit, adm["adm1000.q_sample"], t, clip_denoised=clip,
                                                          model_kwargs=dict(y=adm["adm.in.y"]))
    for name in ["mean", "variance", "log_variance", "pred_xstart"]:
        assert_close_to_recorded(out[name], adm[prefix + name], NETWORK, name)


@pytest.mark.parametrize("chain", ["adm250", "admddim50"])
def test_ddim_step_matches_dit(adm, dit, chain):
    diffusion = create_diffusion({"adm250": "250", "admddim50": "ddim50"}[chain])
    with torch.no_grad():
        out = diffusion.ddim_sample(dit, adm["adm1000.q_sample"], adm[f"{chain}.p_mean_variance.in.t_index"],
                                    clip_denoised=False, model_kwargs=dict(y=adm["adm.in.y"]), eta=0.0)
    assert_close_to_recorded(out["sample"], adm[f"{chain}.ddim_sample_eta0.sample"], NETWORK, "sample")


def test_ddim_chain_matches_dit(adm, dit):
    noise = adm["adm.in.ddim_init"]
    samples = create_diffusion("ddim50").ddim_sample_loop(dit, noise.shape, noise, clip_denoised=False,
                                                          model_kwargs=dict(y=adm["adm.in.y"]))
    # 50 network calls: float32 rounding differences grow along the chain
    assert_close_to_recorded(samples, adm["admddim50.ddim_sample_loop_eta0"], CHAIN, "sample")


def test_guidance_scale_one_is_the_conditional_model(adm, dit):
    """Through DiT's forward_with_cfg (conditional and null-class halves in one batch), scale 1 gives what
    the conditional model alone gives, step after step; scale 4 does not."""
    diffusion = create_diffusion("ddim10")
    noise, y = adm["adm.in.ddim_init"], adm["adm.in.y"]
    conditional = diffusion.ddim_sample_loop(dit, noise.shape, noise, clip_denoised=False,
                                             model_kwargs=dict(y=y))
    doubled_noise, y_cfg = torch.cat([noise, noise]), torch.cat([y, torch.full_like(y, 10)])
    results = {}
    for scale in [1.0, 4.0]:
        guided = diffusion.ddim_sample_loop(dit.forward_with_cfg, doubled_noise.shape, doubled_noise,
                                            clip_denoised=False, model_kwargs=dict(y=y_cfg, cfg_scale=scale))
        results[scale] = guided[:len(noise)]  # the null-class half is dropped, as DiT's sample.py does
    torch.testing.assert_close(results[1.0], conditional, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(results[4.0], conditional, rtol=1e-2, atol=1e-2)


def test_sampling_copies_each_schedule_to_the_device_once(monkeypatch):
    # a per-step copy from host memory makes a GPU wait for its queue to drain every step
    diffusion = create_diffusion("ddim10")
    copies = []
    real_from_numpy = torch.from_numpy
    monkeypatch.setattr(torch, "from_numpy", lambda array: copies.append(array.shape) or real_from_numpy(array))
    model = lambda x, t, **kwargs: torch.cat([torch.zeros_like(x), torch.zeros_like(x)], dim=1)  # noqa: E731
    for _ in range(2):
        diffusion.ddim_sample_loop(model, (2, 1, 4, 4), noise=torch.randn(2, 1, 4, 4))
        diffusion.p_sample_loop(model, (2, 1, 4, 4), noise=torch.randn(2, 1, 4, 4))
    distinct_arrays = len(diffusion._device_copies)
    assert 0 < len(copies) == distinct_arrays < 16  # 40 steps ran: about 10 copies per step before


def test_a_pickled_or_copied_diffusion_samples_as_the_original():
    import copy
    import gc
    import pickle

    model = lambda x, t, **kwargs: torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)  # noqa: E731
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    diffusion = create_diffusion("ddim10", noise_schedule="cosine")
    expected = diffusion.ddim_sample_loop(model, noise.shape, noise=noise)  # fills the device copies
    state = pickle.dumps(diffusion)
    del diffusion
    gc.collect()  # freed arrays' ids may be reused by the copies' arrays
    for copied in (pickle.loads(state), copy.deepcopy(pickle.loads(state))):
        assert torch.equal(copied.ddim_sample_loop(model, noise.shape, noise=noise), expected)
