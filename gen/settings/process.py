"""What the network learns to undo: DiT's Gaussian diffusion or SiT's interpolant transport. The defaults are
create_diffusion's and create_transport's keyword defaults (DiT's and SiT's), read from their signatures."""
import inspect
from dataclasses import dataclass
from typing import ClassVar

from common.cli import none_or_str

from ..diffusion import create_diffusion, create_transport
from . import checks
from .fields import setting


def keyword_defaults(function, skip=()) -> dict:
    """{name: default} of `function`'s parameters that have one, but `skip`: its signature is their one home."""
    return {name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty and name not in skip}


DIFFUSION_DEFAULTS = keyword_defaults(create_diffusion, skip=("timestep_respacing",))  # sampling's, not training's
TRANSPORT_DEFAULTS = keyword_defaults(create_transport)
D, T = DIFFUSION_DEFAULTS, TRANSPORT_DEFAULTS
MAX_DIFFUSION_STEPS = 100_000  # ADM's longest chain has 4,000 steps; the schedule's arrays grow with it


@dataclass
class DiffusionSettings:
    """create_diffusion's options (tests/test_settings.py keeps the two in step)."""
    title: ClassVar[str] = "diffusion (DiT)"

    noise_schedule: str = setting(D["noise_schedule"], choices=("linear", "cosine"))
    predict_xstart: bool = setting(D["predict_xstart"], "predict x_0 instead of eps (weights the high-noise steps "
                                                        "more)")
    learn_sigma: bool = setting(D["learn_sigma"], "learn the variance (DiT), else fixed")
    use_kl: bool = setting(D["use_kl"], "train on the variational bound instead of MSE")
    sigma_small: bool = setting(D["sigma_small"], "fixed variance beta~_t instead of beta_t (without --learn-sigma)")
    rescale_learned_sigmas: bool = setting(D["rescale_learned_sigmas"], "scale the VB term by T/1000")
    diffusion_steps: int = setting(D["diffusion_steps"])

    def validate(self):
        checks.at_least(self, 1, "diffusion_steps")
        checks.within(self, "diffusion_steps", 1, MAX_DIFFUSION_STEPS)


@dataclass
class TransportSettings:
    """create_transport's options."""
    title: ClassVar[str] = "transport (SiT)"

    path_type: str = setting(T["path_type"], choices=("Linear", "GVP", "VP"))
    prediction: str = setting(T["prediction"], choices=("velocity", "noise", "score"))
    loss_weight: str | None = setting(T["loss_weight"], choices=(None, "velocity", "likelihood"), parse=none_or_str)
    train_eps: float | None = setting(T["train_eps"])
    sample_eps: float | None = setting(T["sample_eps"])

    def validate(self):  # create_transport checks its own combinations when the run builds it
        checks.within(self, "train_eps", 0.0, 0.5, high_open=True)
        checks.within(self, "sample_eps", 0.0, 0.5, high_open=True)
