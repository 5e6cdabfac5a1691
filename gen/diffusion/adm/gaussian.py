"""ADM Gaussian diffusion as DiT uses it: beta schedules, q(x_t | x_0), the model's p(x_{t-1} | x_t), losses,
DDPM and DDIM sampling.

Follows OpenAI's improved-diffusion / guided-diffusion (ADM) as facebookresearch/DiT ships it. Timesteps are
indices 0..T-1 into this chain (0 is the first noising step). Schedules are float64 numpy arrays; values are
gathered per sample and cast to the data's dtype, as ADM does, so results match ADM's to float32 rounding.
`SpacedDiffusion` (respace.py) reuses everything here and only changes which timesteps the model sees.
"""
import enum
import math

import numpy as np
import torch

from ..batch_ops import append_dims, mean_flat
from .likelihood import discretized_gaussian_log_likelihood, normal_kl

# ---------------------------------------------------------------------------------------------- schedules


def linear_beta_schedule(num_steps: int) -> np.ndarray:
    """Ho et al.'s 1e-4..0.02 over 1000 steps, rescaled so any step count gives a similar process."""
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def betas_for_alpha_bar(num_steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """Betas that make the cumulative product of (1 - beta) follow alpha_bar(t) on t in [0, 1]."""
    betas = []
    for i in range(num_steps):
        t1, t2 = i / num_steps, (i + 1) / num_steps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))  # capped: no singular last step
    return np.array(betas, dtype=np.float64)


def cosine_beta_schedule(num_steps: int) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule (diffusers' "squaredcos_cap_v2")."""
    return betas_for_alpha_bar(num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)


def named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """"linear" or "cosine" ("squaredcos_cap_v2", DiT's name for it, is accepted too)."""
    if name == "linear":
        return linear_beta_schedule(num_steps)
    if name in ("cosine", "squaredcos_cap_v2"):
        return cosine_beta_schedule(num_steps)
    raise ValueError(f"unknown noise schedule {name!r}; use 'linear' or 'cosine'")


# ------------------------------------------------------------------------------------------------ options


class ModelMeanType(enum.Enum):
    """What the network's first C output channels predict."""

    EPSILON = enum.auto()  # the noise that was added
    START_X = enum.auto()  # the clean sample x_0


class ModelVarType(enum.Enum):
    """Where the reverse-step variance comes from."""

    FIXED_SMALL = enum.auto()  # the posterior variance beta~_t (lower bound)
    FIXED_LARGE = enum.auto()  # beta_t (upper bound)
    LEARNED_RANGE = enum.auto()  # the network's last C channels, v in [-1, 1], interpolate the log-variances


class LossType(enum.Enum):
    MSE = enum.auto()  # MSE on the mean prediction (+ the VB term when the variance is learned)
    RESCALED_MSE = enum.auto()  # same, with the VB term scaled by T / 1000
    KL = enum.auto()  # the variational bound term alone
    RESCALED_KL = enum.auto()  # the VB term times T, an estimate of the full bound


def _last(steps):
    """The final item of a generator, holding on to nothing else."""
    final = None
    for step in steps:
        final = step
    return final


# ------------------------------------------------------------------------------------------------ process


class GaussianDiffusion:
    """Utilities for training and sampling a Gaussian diffusion with the given betas (beta_1 first)."""

    def __init__(self, *, betas, model_mean_type: ModelMeanType, model_var_type: ModelVarType,
                 loss_type: LossType):
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type

        betas = np.asarray(betas, dtype=np.float64)  # float64: 1000-step products lose digits in float32
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array of values in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)
        self._device_copies = {}  # (name of one of the arrays below, device) -> that array as a tensor there

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)

        # q(x_t | x_0) and its inversions
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)

        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the posterior variance is 0 at t = 0, so its log takes the t = 1 value there
        self.posterior_log_variance_clipped = (
            np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
            if self.num_timesteps > 1 else np.array([])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )
        self.log_betas = np.log(betas)
        # fixed-large uses beta_t, but beta~_1 at t = 0 for a better decoder likelihood (as ADM)
        if self.num_timesteps > 1:
            self.large_variance = np.append(self.posterior_variance[1], betas[1:])
        else:
            self.large_variance = betas.copy()
        self.large_log_variance = np.log(self.large_variance)

    def _gather(self, schedule: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The array attribute `schedule` at t per sample, in x's dtype, broadcast to x's shape."""
        values = self.on_device(schedule, t.device)[t].to(x.dtype)
        return append_dims(values, x.ndim).expand(x.shape)

    def on_device(self, schedule: str, device) -> torch.Tensor:
        """The array attribute `schedule` as a tensor on `device`, copied once: a copy from pageable host memory
        waits for the device's queue to drain, so copying per sampling step left the GPU idle each step."""
        key = (schedule, torch.device(device))
        if key not in self._device_copies:
            self._device_copies[key] = torch.from_numpy(np.asarray(getattr(self, schedule))).to(device)
        return self._device_copies[key]

    def __getstate__(self):
        """Pickled and copied without the device copies (they are remade where the copy is used)."""
        return {**self.__dict__, "_device_copies": {}}

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timesteps the network is shown for chain indices t (the identity here; see SpacedDiffusion)."""
        return t

    # ------------------------------------------------------------------------------- forward process

    def q_sample(self, x_start, t, noise=None):
        """Draw x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), with the given noise if any."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (self._gather("sqrt_alphas_cumprod", t, x_start) * x_start
                + self._gather("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._gather("posterior_mean_coef1", t, x_t) * x_start
                + self._gather("posterior_mean_coef2", t, x_t) * x_t)
        variance = self._gather("posterior_variance", t, x_t)
        log_variance = self._gather("posterior_log_variance_clipped", t, x_t)
        return mean, variance, log_variance

    def _predict_xstart_from_eps(self, x_t, t, eps):
        return (self._gather("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._gather("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return ((self._gather("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart)
                / self._gather("sqrt_recipm1_alphas_cumprod", t, x_t))

    # ------------------------------------------------------------------------------- reverse process

    def p_mean_variance(self, model, x, t, clip_denoised=True, model_kwargs=None):
        """Run the model at chain index t and return p(x_{t-1} | x_t) as a dict:
        mean, variance, log_variance (all x's shape) and pred_xstart."""
        model_output = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        return self.mean_variance_from_output(model_output, x, t, clip_denoised)

    def mean_variance_from_output(self, model_output, x, t, clip_denoised=True):
        """p(x_{t-1} | x_t) from a network output: C mean channels (+ C variance channels if learned)."""
        C = x.shape[1]
        if self.model_var_type == ModelVarType.LEARNED_RANGE:
            if model_output.shape[1] != 2 * C:
                raise ValueError(f"learned sigma needs {2 * C} output channels, the model gave "
                                 f"{model_output.shape[1]}; build the diffusion with learn_sigma=False")
            model_output, var_values = torch.split(model_output, C, dim=1)
            min_log = self._gather("posterior_log_variance_clipped", t, x)
            max_log = self._gather("log_betas", t, x)
            frac = (var_values + 1) / 2  # v in [-1, 1] -> [posterior variance, beta]
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            if self.model_var_type == ModelVarType.FIXED_LARGE:
                variance, log_variance = "large_variance", "large_log_variance"
            else:
                variance, log_variance = "posterior_variance", "posterior_log_variance_clipped"
            variance, log_variance = self._gather(variance, t, x), self._gather(log_variance, t, x)
            model_output = model_output[:, :C]  # a learned-sigma network used with fixed variance

        if self.model_mean_type == ModelMeanType.START_X:
            pred_xstart = model_output
        else:
            pred_xstart = self._predict_xstart_from_eps(x, t, model_output)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}

    # ------------------------------------------------------------------------------------------ losses

    def vb_terms_bpd(self, p_mean_var, x_start, x_t, t):
        """The bound's term at t in bits per dim: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)), or at t = 0
        the decoder's negative log-likelihood of x_0."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        kl = normal_kl(true_mean, true_log_variance, p_mean_var["mean"], p_mean_var["log_variance"])
        kl = mean_flat(kl) / np.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=p_mean_var["mean"], log_scales=0.5 * p_mean_var["log_variance"])
        decoder_nll = mean_flat(decoder_nll) / np.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None):
        """Per-sample losses at chain indices t: a dict with "loss" and, for the MSE losses, "mse" and
        (learned sigma) "vb"."""
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)

        if self.loss_type in (LossType.KL, LossType.RESCALED_KL):
            out = self.p_mean_variance(model, x_t, t, clip_denoised=False, model_kwargs=model_kwargs)
            loss = self.vb_terms_bpd(out, x_start, x_t, t)
            if self.loss_type == LossType.RESCALED_KL:
                loss = loss * self.num_timesteps
            return {"loss": loss}

        terms = {}
        model_output = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        C = x_t.shape[1]
        if self.model_var_type == ModelVarType.LEARNED_RANGE:
            mean_output, var_values = torch.split(model_output, C, dim=1)
            # the VB term trains only the variance: the mean output enters it detached
            frozen_output = torch.cat([mean_output.detach(), var_values], dim=1)
            out = self.mean_variance_from_output(frozen_output, x_t, t, clip_denoised=False)
            terms["vb"] = self.vb_terms_bpd(out, x_start, x_t, t)
            if self.loss_type == LossType.RESCALED_MSE:
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)  # 1/1000 keeps VB from swamping MSE
            model_output = mean_output

        target = x_start if self.model_mean_type == ModelMeanType.START_X else noise
        if model_output.shape != target.shape:
            raise ValueError(f"model output {tuple(model_output.shape)} does not match the target "
                             f"{tuple(target.shape)}; is learn_sigma set as the network was built?")
        terms["mse"] = mean_flat((target - model_output) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    # ---------------------------------------------------------------------------------------- sampling

    def p_sample(self, model, x, t, clip_denoised=True, model_kwargs=None, noise_fn=None):
        """One ancestral (DDPM) step x_t -> x_{t-1}; returns {"sample", "pred_xstart"}. The step's noise is
        `noise_fn(x)` (default torch.randn_like: the global generator)."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        nonzero = append_dims((t != 0).to(x.dtype), x.ndim)  # the last step returns the mean
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * (noise_fn or torch.randn_like)(x)
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(self, model, x, t, clip_denoised=True, model_kwargs=None, eta=0.0, noise_fn=None):
        """One DDIM step x_t -> x_{t-1} (Song et al. eq. 12); eta = 0 is deterministic, 1 is DDPM-like."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])  # re-derived: clipping may change it
        alpha_bar = self._gather("alphas_cumprod", t, x)
        alpha_bar_prev = self._gather("alphas_cumprod_prev", t, x)
        sigma = (eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
                 * torch.sqrt(1 - alpha_bar / alpha_bar_prev))
        mean_pred = (out["pred_xstart"] * torch.sqrt(alpha_bar_prev)
                     + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps)
        nonzero = append_dims((t != 0).to(x.dtype), x.ndim)
        sample = mean_pred + nonzero * sigma * (noise_fn or torch.randn_like)(x)
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def p_sample_loop(self, model, shape, noise=None, clip_denoised=True, model_kwargs=None, device=None,
                      progress=False, noise_fn=None):
        """Sample with DDPM from T-1 down to 0, starting at `noise` (or fresh N(0, I) of `shape`)."""
        steps = self.p_sample_loop_progressive(model, shape, noise, clip_denoised, model_kwargs, device,
                                               progress, noise_fn)
        return _last(steps)["sample"]

    def p_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, model_kwargs=None,
                                  device=None, progress=False, noise_fn=None):
        """Like p_sample_loop, yielding each step's {"sample", "pred_xstart"}."""
        return self._loop(self.p_sample, model, shape, noise, device, progress,
                          clip_denoised=clip_denoised, model_kwargs=model_kwargs, noise_fn=noise_fn)

    def ddim_sample_loop(self, model, shape, noise=None, clip_denoised=True, model_kwargs=None, device=None,
                         progress=False, eta=0.0, noise_fn=None):
        """Sample with DDIM over this chain's timesteps (use a "ddimN" respacing for N steps)."""
        steps = self.ddim_sample_loop_progressive(model, shape, noise, clip_denoised, model_kwargs, device,
                                                  progress, eta, noise_fn)
        return _last(steps)["sample"]

    def ddim_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, model_kwargs=None,
                                     device=None, progress=False, eta=0.0, noise_fn=None):
        """Like ddim_sample_loop, yielding each step's {"sample", "pred_xstart"}."""
        return self._loop(self.ddim_sample, model, shape, noise, device, progress,
                          clip_denoised=clip_denoised, model_kwargs=model_kwargs, eta=eta, noise_fn=noise_fn)

    def _loop(self, step, model, shape, noise, device, progress, **step_kwargs):
        x = noise if noise is not None else torch.randn(*shape, device=device)
        indices = range(self.num_timesteps - 1, -1, -1)
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="sampling", unit="step", leave=False, dynamic_ncols=True)
        for i in indices:
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            with torch.no_grad():
                out = step(model, x, t, **step_kwargs)
            yield out
            x = out["sample"]
