"""SiT's transport: what the network predicts along an interpolant path, its training loss, and the
velocity and score the samplers integrate (willisma/SiT `transport/`). Noise x0 sits at t = 0, data x1 at
t = 1; the network sees float t in [0, 1].
"""
import enum
import math

import torch

from ..batch_ops import append_dims, mean_flat
from .paths import GVPPath, LinearPath, VPPath


class ModelType(enum.Enum):
    """What the network predicts."""

    VELOCITY = enum.auto()  # dx_t/dt
    NOISE = enum.auto()  # x0, the noise endpoint
    SCORE = enum.auto()  # grad log p_t(x)


class PathType(enum.Enum):
    LINEAR = enum.auto()
    GVP = enum.auto()
    VP = enum.auto()


class WeightType(enum.Enum):
    """Loss weighting for noise and score prediction (velocity prediction is never weighted)."""

    NONE = enum.auto()
    VELOCITY = enum.auto()  # (lambda_t / sigma_t)^2: the error of the velocity it implies
    LIKELIHOOD = enum.auto()  # lambda_t / sigma_t^2: the likelihood bound's weighting


PATHS = {PathType.LINEAR: LinearPath, PathType.GVP: GVPPath, PathType.VP: VPPath}


class Transport:
    def __init__(self, *, model_type: ModelType, path_type: PathType, loss_type: WeightType, train_eps: float,
                 sample_eps: float):
        self.model_type = model_type
        self.path_type = path_type
        self.loss_type = loss_type
        self.path = PATHS[path_type]()
        self.train_eps = train_eps
        self.sample_eps = sample_eps

    def check_interval(self, train_eps, sample_eps, *, diffusion_form="SBDM", sde=False, reverse=False,
                       eval=False, last_step_size=0.0):
        """(t0, t1): the time interval to train or integrate on, kept off the ends where the model's
        parametrisation or the SDE coefficients blow up (SiT's rules)."""
        eps = sample_eps if eval else train_eps
        t0, t1 = 0, 1
        end = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
        if self.path_type == PathType.VP:
            t1 = end  # sigma_1 = 0: the score is singular at the data end
        elif self.model_type != ModelType.VELOCITY or sde:
            # noise/score models divide by sigma_1 = 0; lambda_t ~ 1/t (SBDM's diffusion) blows up at t = 0
            t0 = eps if (diffusion_form == "SBDM" and sde) or self.model_type != ModelType.VELOCITY else 0
            t1 = end
        if reverse:
            t0, t1 = 1 - t0, 1 - t1
        return t0, t1

    def sample(self, x1):
        """(t, x0): uniform t on the training interval and fresh noise x0 for data x1."""
        x0 = torch.randn_like(x1)
        t0, t1 = self.check_interval(self.train_eps, self.sample_eps)
        t = torch.rand((x1.shape[0],)) * (t1 - t0) + t0
        return t.to(x1), x0

    def training_losses(self, model, x1, model_kwargs=None, *, t=None, x0=None):
        """Per-sample loss for data x1: {"loss": [B], "pred": the network output, and for velocity prediction
        "target": the true velocity}. t and x0 are drawn by
        `sample` unless given (given values make the loss reproducible)."""
        if t is None or x0 is None:
            sampled_t, sampled_x0 = self.sample(x1)
            t = sampled_t if t is None else t
            x0 = sampled_x0 if x0 is None else x0
        t, xt, ut = self.path.plan(t, x0, x1)
        model_output = model(xt, t, **(model_kwargs or {}))
        if model_output.shape != xt.shape:
            raise ValueError(f"model output {tuple(model_output.shape)} does not match x_t {tuple(xt.shape)}")

        if self.model_type == ModelType.VELOCITY:
            return {"pred": model_output, "target": ut, "loss": mean_flat((model_output - ut) ** 2)}
        tx = append_dims(t, xt.ndim)
        score_coefficient = self.path.score_coefficient(tx)
        sigma_t, _ = self.path.sigma(tx)
        if self.loss_type == WeightType.VELOCITY:
            weight = (score_coefficient / sigma_t) ** 2
        elif self.loss_type == WeightType.LIKELIHOOD:
            weight = score_coefficient / sigma_t**2
        else:
            weight = 1
        if self.model_type == ModelType.NOISE:
            error = model_output - x0
        else:
            error = model_output * sigma_t + x0  # the true score is -x0 / sigma_t
        return {"pred": model_output, "loss": mean_flat(weight * error**2)}

    def velocity_from_output(self, model_output, x, t):
        """The probability-flow ODE's drift dx/dt at (x, t) from the network's output."""
        if self.model_type == ModelType.VELOCITY:
            return model_output
        return self.path.velocity_from_score(self.score_from_output(model_output, x, t), x, t)

    def score_from_output(self, model_output, x, t):
        """grad log p_t(x) from the network's output."""
        if self.model_type == ModelType.SCORE:
            return model_output
        if self.model_type == ModelType.NOISE:
            return model_output / -self.path.sigma(append_dims(t, x.ndim))[0]  # score = -E[x0|x_t] / sigma_t
        return self.path.score_from_velocity(model_output, x, t)

    def velocity(self, x, t, model, **model_kwargs):
        return self.velocity_from_output(model(x, t, **model_kwargs), x, t)

    def score(self, x, t, model, **model_kwargs):
        return self.score_from_output(model(x, t, **model_kwargs), x, t)

    def prior_logp(self, z):
        """log N(z; 0, I) per sample."""
        dims = z[0].numel()
        return -dims / 2.0 * math.log(2 * math.pi) - z.flatten(1).pow(2).sum(dim=1) / 2.0


def create_transport(path_type="Linear", prediction="velocity", loss_weight=None, train_eps=None,
                     sample_eps=None) -> Transport:
    """SiT's transport: `path_type` "Linear", "GVP" or "VP"; `prediction` "velocity", "noise" or "score";
    `loss_weight` None, "velocity" or "likelihood" (noise and score prediction only). The eps keep training
    and sampling times off singular ends: VP defaults to 1e-5 (train) and 1e-3 (sample); Linear and GVP
    with noise or score prediction to 1e-3 and 1e-3; velocity prediction on Linear and GVP is finite
    everywhere, so both are 0 whatever is passed (as in SiT)."""
    model_types = {"velocity": ModelType.VELOCITY, "noise": ModelType.NOISE, "score": ModelType.SCORE}
    weight_types = {None: WeightType.NONE, "velocity": WeightType.VELOCITY,
                    "likelihood": WeightType.LIKELIHOOD}
    path_types = {"Linear": PathType.LINEAR, "GVP": PathType.GVP, "VP": PathType.VP}
    choices = (("path_type", path_type, path_types), ("prediction", prediction, model_types),
               ("loss_weight", loss_weight, weight_types))
    for name, value, options in choices:
        if value not in options:
            raise ValueError(f"unknown {name} {value!r}; use one of {list(options)}")
    model_type, path = model_types[prediction], path_types[path_type]

    if path == PathType.VP:
        train_eps = 1e-5 if train_eps is None else train_eps
        sample_eps = 1e-3 if sample_eps is None else sample_eps
    elif model_type != ModelType.VELOCITY:
        train_eps = 1e-3 if train_eps is None else train_eps
        sample_eps = 1e-3 if sample_eps is None else sample_eps
    else:
        train_eps = sample_eps = 0
    return Transport(model_type=model_type, path_type=path, loss_type=weight_types[loss_weight],
                     train_eps=train_eps, sample_eps=sample_eps)
