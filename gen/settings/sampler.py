"""How images are drawn: the sampler of DiT (ddpm, ddim, dpm-solver) or SiT (ODE, SDE) with its options, the
steps, the arithmetic, and classifier-free guidance. Training records these with its weights; sample.py and the
pipeline fill what their caller left unset (None) from that record, else from the defaults here."""
from dataclasses import dataclass
from typing import ClassVar

from common.cli import none_or_str
from common.errors import UserError

from .. import checks
from ..sampling import (
    DEFAULT_PRECISION,
    DIT_SAMPLER_DEFAULTS,
    DIT_SAMPLERS,
    GUIDANCE_FOR_FID,
    GUIDANCE_FOR_PICTURES,
    PRECISIONS,
    SIT_MODES,
    SIT_SAMPLER_DEFAULTS,
    guided_within,
    make_sampler,
    noise_level_of,
)
from .fields import setting
from .process import PROCESS_DEFAULTS

DEFAULT_SAMPLING_STEPS = 250  # DiT's and SiT's
MAX_SAMPLING_STEPS = 100_000  # 100x ADM's longest chain: a larger count is a typo that would run for days
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
        checks.at_least(self, 1, "num_sampling_steps")
        checks.within(self, "num_sampling_steps", 1, MAX_SAMPLING_STEPS)


@dataclass
class DiTSamplerSettings(SamplerSettings):
    sampler: str = setting(D["sampler"], "DiT's sampler", choices=DIT_SAMPLERS)
    ddim_eta: float = setting(D["ddim_eta"], "DDIM noise (0: deterministic)")


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
        checks.at_least(self, 0.0, "time_shift")


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
        GuidanceSettings.validate(self)


SAMPLER_DEFAULTS = {"DiT": D, "SiT": S}
GUIDANCE_INTERVAL = {"guidance_low": 0.0, "guidance_high": 1.0}  # every noise level: DiT's and SiT's guidance
OWN_KIND = {"DiT": "sampler", "SiT": "mode"}  # the option that names the sampler


def own_options(family: str) -> tuple[str, ...]:
    """The sampler options of `family` alone (not the steps and precision both share), in the order exports
    record them."""
    return tuple(SAMPLER_DEFAULTS[family])


def family_options(family: str) -> tuple[str, ...]:
    """The sampler and process options that belong to `family` alone."""
    return (*own_options(family), *PROCESS_DEFAULTS[family])


def sampler_record(settings, family: str) -> dict:
    """The sampler options, steps and guidance that training sampled with: what exports record and sample.py takes
    as its defaults for them."""
    return {"num_sampling_steps": settings.num_sampling_steps, "cfg_scale": settings.cfg_scale,
            **{key: getattr(settings, key) for key in GUIDANCE_INTERVAL},
            **{key: getattr(settings, key) for key in own_options(family)}}


def build_sampler(settings, family: str, process: dict):
    """sample_fn of these sampler settings for a model trained with diffusion or transport settings `process`."""
    options = {key: getattr(settings, key) for key in own_options(family)}
    sample_fn = make_sampler(family, options.pop(OWN_KIND[family]), settings.num_sampling_steps, **options, **process)
    interval = tuple(default if getattr(settings, key, None) is None else getattr(settings, key)
                     for key, default in GUIDANCE_INTERVAL.items())  # unset (None): every noise level
    if interval == tuple(GUIDANCE_INTERVAL.values()):
        return sample_fn
    return guided_within(sample_fn, *interval, noise_level_of(family, process.get("diffusion_steps", 1000)))


def fill_from_record(settings, family: str, source, recorded: dict | None = None):
    """sample.py and the pipeline: a sampler or process option of the other family that the caller set (not None)
    is refused; then the options left None take the weights file's `recorded` sampler
    (sampler_record; its options only while the caller keeps its sampler or mode), else the family's defaults.
    Steps and guidance left None mean "no record" (fill_defaults)."""
    other = "SiT" if family == "DiT" else "DiT"
    usage = "--sampler ddpm|ddim" if family == "DiT" else "--mode ODE|SDE"
    for key in family_options(other):
        value = getattr(settings, key, None)
        if value is not None:
            raise UserError(f"{checks.flag(key)} {value} is a {other} flag, but {source} holds a {family} model; "
                            f"drop it ({family} samples with {usage})")
    recorded = recorded or {}
    kind = OWN_KIND[family]
    same_sampler = getattr(settings, kind) in (None, recorded.get(kind))
    for key, default in {**D, **S}.items():
        if getattr(settings, key) is None:
            setattr(settings, key, recorded[key] if same_sampler and key in recorded else default)
    for key in ("num_sampling_steps", "cfg_scale", *GUIDANCE_INTERVAL):
        if getattr(settings, key) is None:
            setattr(settings, key, recorded.get(key))


def fill_defaults(settings, pictures: bool):
    """Steps and guidance that neither the caller nor the weights file gave (after fill_from_record): DiT's."""
    if settings.num_sampling_steps is None:
        settings.num_sampling_steps = DEFAULT_SAMPLING_STEPS
    if settings.cfg_scale is None:
        settings.cfg_scale = GUIDANCE_FOR_PICTURES if pictures else GUIDANCE_FOR_FID
    for key, default in GUIDANCE_INTERVAL.items():
        if getattr(settings, key) is None:
            setattr(settings, key, default)
