"""SiT's samplers over a Transport: the probability-flow ODE (torchdiffeq: fixed-grid "euler", "heun2",
"heun3", "rk4", ... or adaptive "dopri5"), the reverse SDE (Euler-Maruyama or Heun) with SiT's diffusion
forms and last steps, and ODE log-likelihoods with Hutchinson's trace estimator.

Every `sample_*` method returns `sample_fn(x, model, **model_kwargs)`; for classifier-free guidance pass
`model.forward_with_cfg` as the model and `cfg_scale` (with the doubled batch) in model_kwargs.
"""
import torch
from torchdiffeq import odeint

from ..batch_ops import append_dims
from .transport import Transport

# ------------------------------------------------------------------------------------------ integrators


def shifted_times(times, time_shift: float):
    """LightningDiT's timestep shift s t / (1 + (s - 1) t) of a time grid (s < 1: more of the steps near the noise
    end, t = 0); s = 0 (or 1) leaves the grid as it is."""
    if not time_shift or time_shift == 1:
        return times
    return time_shift * times / (1 + (time_shift - 1) * times)


def integrate_ode(drift, x, times, model, *, method, atol, rtol, **model_kwargs):
    """Solve dx/dt = drift(x, t, model) over `times`; returns the states at `times` ([len(times), ...],
    or a tuple of such for tuple states)."""
    batch_size = x[0].shape[0] if isinstance(x, tuple) else x.shape[0]

    def func(t, state):
        return drift(state, t.expand(batch_size), model, **model_kwargs)

    tolerances = len(x) if isinstance(x, tuple) else 1
    return odeint(func, x, times, method=method, atol=[atol] * tolerances, rtol=[rtol] * tolerances)


def euler_maruyama_step(drift, diffusion, x, t, dt, model, noise_fn=torch.randn_like, **model_kwargs):
    """x + f dt + sqrt(2 w) dW, dW from `noise_fn(x)`; returns (x_next, its mean)."""
    mean_x = x + drift(x, t, model, **model_kwargs) * dt
    return mean_x + torch.sqrt(2 * diffusion(x, t)) * noise_fn(x) * dt.sqrt(), mean_x


def heun_sde_step(drift, diffusion, x, t, dt, model, noise_fn=torch.randn_like, **model_kwargs):
    """SiT's stochastic Heun: add the step's noise first, then a Heun step of the drift; returns (x_next,
    the noised start)."""
    x_hat = x + torch.sqrt(2 * diffusion(x, t)) * noise_fn(x) * dt.sqrt()
    k1 = drift(x_hat, t, model, **model_kwargs)
    k2 = drift(x_hat + dt * k1, t + dt, model, **model_kwargs)
    return x_hat + 0.5 * dt * (k1 + k2), x_hat


SDE_STEPS = {"Euler": euler_maruyama_step, "Heun": heun_sde_step}


def integrate_sde(drift, diffusion, x, times, model, *, step, noise_fn=torch.randn_like, **model_kwargs):
    """len(times) - 1 steps of `step` along `times`; returns the list of states after each step."""
    states = []
    for t_cur, t_next in zip(times[:-1], times[1:], strict=True):
        t = t_cur.expand(x.shape[0])
        with torch.no_grad():
            x, _ = step(drift, diffusion, x, t, t_next - t_cur, model, noise_fn, **model_kwargs)
        states.append(x)
    return states


# ---------------------------------------------------------------------------------------------- sampler


class Sampler:
    """ODE and SDE samplers for a Transport, with SiT's arguments and defaults."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def sde_drift(self, diffusion_form, diffusion_norm):
        """Reverse-SDE drift v + w_t * score (one network call), for the diffusion w_t of the given form."""
        transport = self.transport

        def drift(x, t, model, **model_kwargs):
            model_output = model(x, t, **model_kwargs)
            velocity = transport.velocity_from_output(model_output, x, t)
            score = transport.score_from_output(model_output, x, t)
            return velocity + transport.path.diffusion(x, t, diffusion_form, diffusion_norm) * score

        return drift

    def last_step_fn(self, sde_drift, last_step, last_step_size):
        """The final jump from t1 to the data end: "Mean" (an SDE step without noise), "Tweedie" (the
        posterior mean of the data), "Euler" (an ODE step) or None (stay)."""
        transport, path = self.transport, self.transport.path
        if last_step is None:
            return lambda x, t, model, **kwargs: x
        if last_step == "Mean":
            return lambda x, t, model, **kwargs: x + sde_drift(x, t, model, **kwargs) * last_step_size
        if last_step == "Euler":
            return lambda x, t, model, **kw: x + transport.velocity(x, t, model, **kw) * last_step_size
        if last_step == "Tweedie":
            def tweedie(x, t, model, **kwargs):  # E[x1 | x_t] = (x_t + sigma_t^2 score) / alpha_t
                tx = append_dims(t, x.ndim)
                alpha_t, sigma_t = path.alpha(tx)[0], path.sigma(tx)[0]
                return x / alpha_t + sigma_t**2 / alpha_t * transport.score(x, t, model, **kwargs)
            return tweedie
        raise ValueError(f"unknown last step {last_step!r}; use 'Mean', 'Tweedie', 'Euler' or None")

    def sample_sde(self, *, sampling_method="Euler", diffusion_form="SBDM", diffusion_norm=1.0,
                   last_step="Mean", last_step_size=0.04, num_steps=250, time_shift=0.0):
        """Integrate the reverse SDE dx = [v + w_t score] dt + sqrt(2 w_t) dW from noise (t0) to t1 with
        num_steps - 1 steps of `sampling_method` ("Euler" or "Heun") on a grid shifted by `time_shift`
        (shifted_times), then take `last_step` of size `last_step_size`. sample_fn returns the list of the
        num_steps states; the last is the sample."""
        if sampling_method not in SDE_STEPS:
            raise ValueError(f"unknown SDE sampling method {sampling_method!r}; use 'Euler' or 'Heun'")
        if last_step is None:
            last_step_size = 0.0
        drift = self.sde_drift(diffusion_form, diffusion_norm)
        t0, t1 = self.transport.check_interval(
            self.transport.train_eps, self.transport.sample_eps, diffusion_form=diffusion_form, sde=True,
            eval=True, reverse=False, last_step_size=last_step_size)
        start_diffusion = self.transport.path.diffusion(torch.zeros(1), torch.tensor([t0]), diffusion_form)
        if not torch.isfinite(start_diffusion).all():  # SiT would return NaN samples
            raise ValueError(f"the {diffusion_form} diffusion is infinite at t = {t0} on this path; use "
                             "diffusion_form='sigma', SiT's command-line default")
        last_step_fn = self.last_step_fn(drift, last_step, last_step_size)

        def diffusion(x, t):
            return self.transport.path.diffusion(x, t, diffusion_form, diffusion_norm)

        def sample_fn(x, model, noise_fn=torch.randn_like, **model_kwargs):
            times = shifted_times(torch.linspace(t0, t1, num_steps, dtype=x.dtype, device=x.device), time_shift)
            states = integrate_sde(drift, diffusion, x, times, model, step=SDE_STEPS[sampling_method],
                                   noise_fn=noise_fn, **model_kwargs)
            with torch.no_grad():
                states.append(last_step_fn(states[-1], times[-1].expand(x.shape[0]), model, **model_kwargs))
            return states

        return sample_fn

    def sample_ode(self, *, sampling_method="dopri5", num_steps=50, atol=1e-6, rtol=1e-3, reverse=False,
                   time_shift=0.0):
        """Integrate the probability-flow ODE from noise to data (data to noise if `reverse`) with the
        torchdiffeq method `sampling_method`: fixed-grid methods take num_steps - 1 steps, adaptive ones
        report num_steps points, on a grid shifted by `time_shift` (shifted_times). sample_fn returns the states
        at those points ([num_steps, B, ...])."""
        t0, t1 = self.transport.check_interval(
            self.transport.train_eps, self.transport.sample_eps, sde=False, eval=True, reverse=reverse,
            last_step_size=0.0)

        def sample_fn(x, model, **model_kwargs):
            times = shifted_times(torch.linspace(t0, t1, num_steps, dtype=x.dtype, device=x.device), time_shift)
            with torch.no_grad():
                return integrate_ode(self.transport.velocity, x, times, model, method=sampling_method,
                                     atol=atol, rtol=rtol, **model_kwargs)

        return sample_fn

    def sample_ode_likelihood(self, *, sampling_method="dopri5", num_steps=50, atol=1e-6, rtol=1e-3):
        """Integrate the ODE from data back to noise together with the divergence of the velocity (one
        Rademacher Hutchinson probe per evaluation). sample_fn(x, model, **model_kwargs) returns
        (log p(x) per sample in nats, the noise x maps to)."""
        transport = self.transport

        def drift_and_divergence(state, s, model, **model_kwargs):
            x, _ = state
            t = 1 - s  # integrate the model's time from data (1) down to noise (0)
            probe = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                velocity = transport.velocity(x, t, model, **model_kwargs)
                grad = torch.autograd.grad((velocity * probe).sum(), x)[0]
            divergence = (grad * probe).flatten(1).sum(dim=1)
            return -velocity.detach(), divergence

        t0, t1 = transport.check_interval(transport.train_eps, transport.sample_eps, sde=False, eval=True,
                                          reverse=False, last_step_size=0.0)

        def sample_fn(x, model, **model_kwargs):
            times = torch.linspace(t0, t1, num_steps, dtype=x.dtype, device=x.device)
            start = (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
            states, delta_logp = integrate_ode(drift_and_divergence, start, times, model,
                                               method=sampling_method, atol=atol, rtol=rtol, **model_kwargs)
            noise = states[-1]
            return transport.prior_logp(noise) - delta_logp[-1], noise

        return sample_fn
