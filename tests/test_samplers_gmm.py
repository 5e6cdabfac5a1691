"""Every sampler, driven by the exact model of a 2-D Gaussian mixture, must reproduce the mixture.

No network: the "model" is the closed-form eps / velocity / score of the noised mixture (tests/gmm.py),
so any error in a sampler's coefficients, time grid or timestep mapping shows up as a wrong mean,
covariance or mixture weight. Samples are [N, 2] "images"; bounds are explained in assert_matches_mixture.
"""
import numpy as np
import pytest
import torch
from gmm import DTYPE, GaussianMixture, assert_matches_mixture, three_blobs

from gen.diffusion import ModelType, Sampler, create_diffusion, create_transport

NUM_SAMPLES = 4000


@pytest.fixture(scope="module")
def mixture():
    return three_blobs()


def starting_noise(seed=0):
    return torch.randn(NUM_SAMPLES, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))


def exact_eps_model(mixture, diffusion_steps=1000, learn_sigma=False):
    """eps(x_t, t) for ADM timesteps t of the full `diffusion_steps` chain (what a respaced chain must
    pass); with learn_sigma the variance channels say v = -1, i.e. the posterior variance beta~_t."""
    alphas_cumprod = torch.from_numpy(create_diffusion("", diffusion_steps=diffusion_steps).alphas_cumprod)

    def model(x, t):
        _, eps = mixture.posterior_means(x, alphas_cumprod[t].sqrt(), (1 - alphas_cumprod[t]).sqrt())
        return torch.cat([eps, -torch.ones_like(eps)], dim=1) if learn_sigma else eps

    return model


def exact_transport_model(mixture, transport):
    """The velocity, noise or score of x_t = alpha_t x1 + sigma_t x0 on the transport's path."""
    path = transport.path

    def model(x, t):
        (alpha, d_alpha), (sigma, d_sigma) = path.alpha(t), path.sigma(t)
        data, noise = mixture.posterior_means(x, alpha, sigma)
        if transport.model_type == ModelType.VELOCITY:
            return d_alpha[:, None] * data + d_sigma[:, None] * noise
        if transport.model_type == ModelType.NOISE:
            return noise
        return -noise / sigma[:, None]

    return model


@pytest.mark.parametrize("learn_sigma", [True, False], ids=["learned-range", "fixed-large"])
def test_ddpm_250_steps(mixture, learn_sigma):
    """Learned range with the exact model saying v = -1 (the posterior variance), and learn_sigma=False
    (beta_t): both variances are right in the many-step limit, and both pass at 250 steps."""
    torch.manual_seed(0)
    diffusion = create_diffusion("250", learn_sigma=learn_sigma)
    samples = diffusion.p_sample_loop(exact_eps_model(mixture, learn_sigma=learn_sigma), (NUM_SAMPLES, 2),
                                      noise=starting_noise(), clip_denoised=False)
    assert_matches_mixture(samples, mixture)


def ddim_unit_gaussian_gain(diffusion):
    """For data N(0, I) the exact eps is sqrt(1 - abar_t) x_t, and an eta = 0 DDIM step from index i
    multiplies x by sqrt(abar_prev abar) + sqrt((1 - abar_prev)(1 - abar)) = cos(theta_prev - theta):
    the whole chain is a known scalar gain (< 1: a first-order solver shrinks the spread)."""
    abar, abar_prev = diffusion.alphas_cumprod, diffusion.alphas_cumprod_prev
    return float(np.prod(np.sqrt(abar_prev * abar) + np.sqrt((1 - abar_prev) * (1 - abar))))


def test_ddim_50_steps_eta0_on_unit_gaussian_is_the_closed_form_map():
    unit_gaussian = GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]])
    diffusion = create_diffusion("ddim50")
    noise = starting_noise()[:16]
    samples = diffusion.ddim_sample_loop(exact_eps_model(unit_gaussian, learn_sigma=True), noise.shape,
                                         noise=noise, clip_denoised=False)
    torch.testing.assert_close(samples, noise * ddim_unit_gaussian_gain(diffusion), rtol=1e-12, atol=1e-12)


def test_ddim_50_steps_eta0(mixture):
    """Mean and weights within sampling error; the covariance may also shrink by as much as DDIM-50 shrinks
    a unit Gaussian's variance (1 - gain^2 = 8% on this schedule, see above): at 4000 samples that
    first-order bias (about 4% here, measured with 100k samples) is a few standard errors."""
    diffusion = create_diffusion("ddim50")
    samples = diffusion.ddim_sample_loop(exact_eps_model(mixture, learn_sigma=True), (NUM_SAMPLES, 2),
                                         noise=starting_noise(), clip_denoised=False, eta=0.0)
    shrink = 1 - ddim_unit_gaussian_gain(diffusion) ** 2
    assert shrink < 0.1
    assert_matches_mixture(samples, mixture, variance_shrink_allowance=shrink)


def test_ddim_eta1_100_steps(mixture):
    """eta = 1 makes DDIM an ancestral sampler with DDPM's noise: no deterministic shrink to allow for."""
    torch.manual_seed(0)
    diffusion = create_diffusion("100")
    samples = diffusion.ddim_sample_loop(exact_eps_model(mixture, learn_sigma=True), (NUM_SAMPLES, 2),
                                         noise=starting_noise(), clip_denoised=False, eta=1.0)
    assert_matches_mixture(samples, mixture)


def test_ddim_without_timestep_map_fails(mixture):
    """The check above can fail: a model shown the respaced indices (0..49) instead of the original
    timesteps (as a chain without DiT's timestep map would do) gives the wrong distribution."""
    diffusion = create_diffusion("ddim50")
    model = exact_eps_model(mixture, learn_sigma=True)
    diffusion.model_timesteps = lambda t: t
    samples = diffusion.ddim_sample_loop(model, (NUM_SAMPLES, 2), noise=starting_noise(), clip_denoised=False)
    with pytest.raises(AssertionError):
        assert_matches_mixture(samples, mixture)


@pytest.mark.parametrize("path_type", ["Linear", "GVP", "VP"])
def test_ode_heun_50_steps(mixture, path_type):
    transport = create_transport(path_type, "velocity")
    sample_fn = Sampler(transport).sample_ode(sampling_method="heun2", num_steps=50)
    trajectory = sample_fn(starting_noise(), exact_transport_model(mixture, transport))
    assert trajectory.shape == (50, NUM_SAMPLES, 2)
    assert_matches_mixture(trajectory[-1], mixture)


@pytest.mark.parametrize(
    "path_type, prediction, diffusion_form, last_step",
    [
        ("Linear", "velocity", "sigma", "Mean"),  # SiT's command-line default form
        ("Linear", "score", "SBDM", "Tweedie"),  # sample_sde's default form needs t0 = eps > 0
        ("GVP", "noise", "linear", "Euler"),
    ],
)
def test_sde_euler_250_steps(mixture, path_type, prediction, diffusion_form, last_step):
    torch.manual_seed(0)
    transport = create_transport(path_type, prediction)
    sample_fn = Sampler(transport).sample_sde(sampling_method="Euler", diffusion_form=diffusion_form,
                                              last_step=last_step, num_steps=250)
    trajectory = sample_fn(starting_noise(), exact_transport_model(mixture, transport))
    assert len(trajectory) == 250
    assert_matches_mixture(trajectory[-1], mixture)


def test_sde_heun(mixture):
    torch.manual_seed(0)
    transport = create_transport("Linear", "velocity")
    sample_fn = Sampler(transport).sample_sde(sampling_method="Heun", diffusion_form="sigma", num_steps=100)
    samples = sample_fn(starting_noise(), exact_transport_model(mixture, transport))[-1]
    assert_matches_mixture(samples, mixture)


def test_ode_likelihood_matches_mixture_density(mixture):
    """log p(x) from the ODE + Hutchinson estimator agrees with the mixture's exact density (on average
    over points: each point's estimate carries the probe noise)."""
    torch.manual_seed(0)
    transport = create_transport("Linear", "velocity")
    points = mixture.sample(256, generator=torch.Generator().manual_seed(5))
    sample_fn = Sampler(transport).sample_ode_likelihood(sampling_method="heun2", num_steps=100)
    logp, noise = sample_fn(points, exact_transport_model(mixture, transport))
    exact = mixture.log_density(points)
    assert noise.shape == points.shape
    assert abs((logp - exact).mean()) < 0.05, (logp - exact).mean()
    assert (logp - exact).abs().median() < 0.2
