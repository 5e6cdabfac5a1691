"""Every sampler with one contract (k-diffusion's habit):

    sample_fn(model_fn, noise, *, noise_sampler=None, progress=False) -> x at the data end

`model_fn(x, t)` is the network with its conditioning and guidance bound (gen.sampling.guidance.guided);
`noise_sampler(x)` draws the noise of a stochastic step, one row per image (gen.sampling.seeding.StepNoise: a
function of the image and the step), so that a stochastic sampler gives image i the same result in any batch.
`dit_sampler` and `sit_sampler` bind a sampler's settings: DiT's DDPM, DDIM and DPM-Solver++ over ADM's diffusion,
SiT's ODE and SDE over its transport (gen.family.make_sampler picks by family).
"""
import contextlib
import functools

import torch

from common.errors import InvalidValue

DIT_SAMPLERS = ("ddpm", "ddim", "dpm-solver")
SIT_MODES = ("ODE", "SDE")
DPM_SOLVER_NEEDS = dict(noise_schedule="linear", predict_xstart=False, diffusion_steps=1000)


# -- DiT: ADM's Gaussian diffusion -------------------------------------------------------------------------------
def ddpm(model_fn, noise, *, diffusion, noise_sampler=None, progress=False):
    """Ancestral sampling over the chain of `diffusion` (a respaced ADM diffusion)."""
    return diffusion.p_sample_loop(model_fn, noise.shape, noise, clip_denoised=False, progress=progress,
                                   noise_fn=noise_sampler)


def ddim(model_fn, noise, *, diffusion, eta=0.0, noise_sampler=None, progress=False):
    """DDIM over the chain of `diffusion`; eta = 0 is deterministic."""
    return diffusion.ddim_sample_loop(model_fn, noise.shape, noise, clip_denoised=False, progress=progress,
                                      eta=eta, noise_fn=noise_sampler)


def dpm_solver(model_fn, noise, *, num_steps, noise_sampler=None, progress=False):
    """DPM-Solver++ (2M) of diffusers on DiT's linear betas, driven by the eps channels of the network."""
    from diffusers import DPMSolverMultistepScheduler
    from tqdm.auto import tqdm

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        algorithm_type="dpmsolver++", solver_order=2, prediction_type="epsilon")
    scheduler.set_timesteps(num_steps, device=noise.device)
    x = noise
    for t in tqdm(scheduler.timesteps, desc="sampling", unit="step", leave=False, disable=not progress):
        eps = model_fn(x, t.expand(len(x)))[:, : x.shape[1]]  # drop the learned-sigma half
        x = scheduler.step(eps, t, x).prev_sample
    return x


# -- SiT: stochastic interpolants --------------------------------------------------------------------------------
def ode(model_fn, noise, *, integrator, noise_sampler=None, progress=False):
    """The probability-flow ODE (`integrator` from Sampler.sample_ode); deterministic."""
    with counted(model_fn, progress) as counted_fn:
        return integrator(noise, counted_fn)[-1]


def sde(model_fn, noise, *, integrator, noise_sampler=None, progress=False):
    """The reverse SDE (`integrator` from Sampler.sample_sde), its Brownian steps from `noise_sampler`."""
    with counted(model_fn, progress) as counted_fn:
        return integrator(noise, counted_fn, noise_fn=noise_sampler or torch.randn_like)[-1]


@contextlib.contextmanager
def counted(model_fn, progress: bool):
    """`model_fn`, ticking a progress bar at each evaluation when `progress` (an adaptive solver's count of
    evaluations is not known beforehand, so the bar counts up)."""
    if not progress:
        yield model_fn
        return
    from tqdm.auto import tqdm

    with tqdm(desc="sampling", unit="evaluation", leave=False) as bar:
        def ticking(*args, **kwargs):
            bar.update(1)
            return model_fn(*args, **kwargs)

        yield ticking


# -- binding the settings ----------------------------------------------------------------------------------------
# the sampler defaults of DiT's and SiT's sample.py: the command lines and the pipeline read them here
DIT_SAMPLER_DEFAULTS = dict(sampler="ddpm", ddim_eta=0.0)
SIT_SAMPLER_DEFAULTS = dict(mode="ODE", sampling_method=None, atol=1e-6, rtol=1e-3, reverse=False,
                            diffusion_form="sigma", diffusion_norm=1.0, last_step="Mean", last_step_size=0.04,
                            time_shift=0.0)


def dit_sampler(name: str, num_steps: int, ddim_eta: float = DIT_SAMPLER_DEFAULTS["ddim_eta"], **diffusion_settings):
    """`diffusion_settings`: create_diffusion's options the model was trained with (noise_schedule,
    predict_xstart, learn_sigma, ...); the chain is respaced to `num_steps` evenly spaced steps."""
    from ..diffusion import create_diffusion

    chain = diffusion_settings.get("diffusion_steps", 1000)
    if not 1 <= num_steps <= chain:
        raise InvalidValue(f"--num-sampling-steps must lie in [1, {chain}] (the model's diffusion chain has {chain} "
                           f"steps), got {num_steps}")
    if name not in DIT_SAMPLERS:
        raise InvalidValue(f"unknown DiT sampler {name!r}; use one of {list(DIT_SAMPLERS)}")
    if name == "dpm-solver":
        unusual = {k: v for k, v in diffusion_settings.items() if k in DPM_SOLVER_NEEDS and v != DPM_SOLVER_NEEDS[k]}
        if unusual:
            raise InvalidValue(f"dpm-solver follows DiT's linear 1000-step eps model; this one was trained with "
                               f"{unusual}: use --sampler ddim or ddpm")
        return functools.partial(dpm_solver, num_steps=num_steps)
    diffusion = create_diffusion(str(num_steps), **diffusion_settings)  # "N": N steps spread over the chain
    if name == "ddpm":
        return functools.partial(ddpm, diffusion=diffusion)
    return functools.partial(ddim, diffusion=diffusion, eta=ddim_eta)


def sit_sampler(mode: str, num_steps: int, **options):
    """`options`: create_transport's settings the model was trained with, and the integrator's (the keys of
    SIT_SAMPLER_DEFAULTS but mode; those not given take these defaults)."""
    from ..diffusion import Sampler, create_transport

    s = {key: options.pop(key, default) for key, default in SIT_SAMPLER_DEFAULTS.items() if key != "mode"}
    check_sit_sampler(mode, num_steps, s["sampling_method"])
    sampler = Sampler(create_transport(**options))  # the transport settings; an unknown key fails there
    if mode == "ODE":
        integrator = sampler.sample_ode(sampling_method=s["sampling_method"] or "dopri5", num_steps=num_steps,
                                        atol=s["atol"], rtol=s["rtol"], reverse=s["reverse"],
                                        time_shift=s["time_shift"])
        return functools.partial(ode, integrator=integrator)
    integrator = sampler.sample_sde(sampling_method=s["sampling_method"] or "Euler",
                                    diffusion_form=s["diffusion_form"], diffusion_norm=s["diffusion_norm"],
                                    last_step=s["last_step"], last_step_size=s["last_step_size"], num_steps=num_steps,
                                    time_shift=s["time_shift"])
    return functools.partial(sde, integrator=integrator)


# -- guidance inside an interval of noise levels (REPA, LightningDiT) -------------------------------------------
def guided_within(sample_fn, low: float, high: float, noise_level):
    """`sample_fn` whose model_fn guides only at noise levels in [low, high] (REPA's --guidance-low/-high; outside,
    the conditional model alone, one batch, as REPA's sampler does)."""
    def interval_sample_fn(model_fn, noise, **options):
        def model_in_interval(x, t):
            return model_fn(x, t, guide=low <= noise_level(t) <= high)

        return sample_fn(model_in_interval, noise, **options)

    return interval_sample_fn


def check_sit_sampler(mode: str, num_steps: int, sampling_method: str | None):
    """Fail now, not after training, on a time grid too short or a method name that does not exist."""
    from torchdiffeq._impl.odeint import SOLVERS  # the names torchdiffeq.odeint accepts

    if mode not in SIT_MODES:
        raise InvalidValue(f"unknown SiT mode {mode!r}; use ODE or SDE")
    if num_steps < 2:
        raise InvalidValue(f"SiT's {mode} sampler needs --num-sampling-steps >= 2 (the points of its time grid), "
                           f"got {num_steps}")
    methods = sorted(SOLVERS) if mode == "ODE" else ["Euler", "Heun"]
    if sampling_method is not None and sampling_method not in methods:
        raise InvalidValue(f"unknown {mode} --sampling-method {sampling_method!r}; use one of {methods}")
