"""How images are drawn: the sampler of DiT (ddpm, ddim, dpm-solver) or SiT (ODE, SDE) with its options, the
steps, the arithmetic, and classifier-free guidance. Training records these with its weights; sample.py and the
pipeline fill what their caller left unset (None) from that record (gen.family.Family.fill_from_record), else
from the defaults here."""
from dataclasses import dataclass
from typing import ClassVar

from common.cli import none_or_str
from common.errors import UserError

from ..sampling.guidance import GUIDANCE_FOR_FID, GUIDANCE_FOR_PICTURES
from ..sampling.precision import DEFAULT_PRECISION, PRECISIONS
from ..sampling.samplers import DIT_SAMPLER_DEFAULTS, DIT_SAMPLERS, SIT_MODES, SIT_SAMPLER_DEFAULTS
from . import checks
from .fields import setting

DEFAULT_SAMPLING_STEPS = 250  # DiT's and SiT's
MAX_SAMPLING_STEPS = checks.MAX_SAMPLING_STEPS
D, S = DIT_SAMPLER_DEFAULTS, SIT_SAMPLER_DEFAULTS


@dataclass
class SamplerSettings:
    """What both families' samplers share."""
    title: ClassVar[str] = "sampler"

    num_sampling_steps: int = setting(DEFAULT_SAMPLING_STEPS)
    precision: str = setting(DEFAULT_PRECISION, "sampling's network and VAE decode: fp32, tf32 (TF32 matmuls on "
                                                "GPUs; --tf32 is DiT's sample_ddp.py spelling), bf16 autocast, or "
                                                "auto: bf16 on GPUs, fp32 on the CPU",
                             choices=("auto", *PRECISIONS), constants={"--tf32": "tf32"})

    def validate(self):
        checks.sampling_steps(self.num_sampling_steps)


@dataclass
class DiTSamplerSettings(SamplerSettings):
    sampler: str = setting(D["sampler"], "DiT's sampler", choices=DIT_SAMPLERS)
    ddim_eta: float = setting(D["ddim_eta"], "DDIM noise (0: deterministic)")

    def validate(self):
        SamplerSettings.validate(self)
        checks.at_least(self, 0.0, "ddim_eta")


@dataclass
class SiTSamplerSettings(SamplerSettings):
    mode: str = setting(S["mode"], "SiT's sampler", choices=SIT_MODES)
    sampling_method: str | None = setting(S["sampling_method"], "ODE: a torchdiffeq method (default dopri5); SDE: "
                                                                "Euler (default) or Heun")
    atol: float = setting(S["atol"], "ODE absolute tolerance")
    rtol: float = setting(S["rtol"], "ODE relative tolerance")
    reverse: bool = setting(S["reverse"], "ODE from data to noise", switch=True)
    diffusion_form: str = setting(S["diffusion_form"], "SDE diffusion coefficient",
                                  choices=("constant", "SBDM", "sigma", "linear", "decreasing",
                                           "increasing-decreasing"))
    diffusion_norm: float = setting(S["diffusion_norm"])
    last_step: str | None = setting(S["last_step"], choices=(None, "Mean", "Tweedie", "Euler"), parse=none_or_str)
    last_step_size: float = setting(S["last_step_size"])
    time_shift: float = setting(S["time_shift"], "LightningDiT's shift of the time grid, s t / (1 + (s - 1) t): "
                                                 "below 1 more steps near the noise (LightningDiT: 0.3); 0: none")

    def validate(self):
        SamplerSettings.validate(self)
        checks.at_least(self, 0.0, "time_shift", "diffusion_norm")
        checks.positive(self, "atol", "rtol")
        checks.within(self, "last_step_size", 0.0, 1.0, high_open=True)


@dataclass
class GuidanceSettings:
    title: ClassVar[str] = "guidance"

    cfg_scale: float = setting(GUIDANCE_FOR_PICTURES, "classifier-free guidance scale (1: none)")
    guidance_low: float = setting(0.0, "guide only at noise levels >= this (0: data, 1: noise; REPA's interval)")
    guidance_high: float = setting(1.0, "guide only at noise levels <= this (REPA: 0.7; LightningDiT: 0.89)")

    def validate(self):
        checks.guidance_scale(self.cfg_scale)
        checks.within(self, "guidance_low", 0.0, 1.0)
        checks.within(self, "guidance_high", 0.0, 1.0)
        if None not in (self.guidance_low, self.guidance_high) and self.guidance_low > self.guidance_high:
            raise UserError(f"--guidance-low {self.guidance_low} is above --guidance-high {self.guidance_high}; the "
                            f"interval of noise levels where guidance applies must not be empty")


@dataclass
class SamplingSettings(SiTSamplerSettings, DiTSamplerSettings, GuidanceSettings):
    """Both families' sampler options and the guidance: sample.py and the pipeline learn the family from the
    weights file, and fill what their caller left None from its record (fill_from_record)."""

    def validate(self):
        SiTSamplerSettings.validate(self)
        DiTSamplerSettings.validate(self)
        GuidanceSettings.validate(self)


GUIDANCE_INTERVAL = {"guidance_low": 0.0, "guidance_high": 1.0}  # every noise level: DiT's and SiT's guidance


def fill_defaults(settings, pictures: bool):
    """Steps and guidance that neither the caller nor the weights file gave (after Family.fill_from_record): DiT's."""
    if settings.num_sampling_steps is None:
        settings.num_sampling_steps = DEFAULT_SAMPLING_STEPS
    if settings.cfg_scale is None:
        settings.cfg_scale = GUIDANCE_FOR_PICTURES if pictures else GUIDANCE_FOR_FID
    for key, default in GUIDANCE_INTERVAL.items():
        if getattr(settings, key) is None:
            setattr(settings, key, default)
