"""The model families, one entry each: DiT (ADM's Gaussian diffusion) and SiT (interpolant transport).

Everything that differs between the families is here: the network, what it learns to undo (the process's
options, loss and noising), how it samples (its sampler options, the option that names the sampler, the sampler
factory, its noise levels) and how it trains (its script and default model; gen/settings/training.py makes each
family's training settings from these). The rest of the library asks an entry and never compares family names,
so a third family (a consistency model, say) is one more entry in FAMILIES and a three-line train_X.py.

    family = family_of(model)                       # or FAMILIES["SiT"], family_named("SiT")
    process = family.recorded_process(model, record)
    sample_fn = family.make_sampler("SDE", 250, **process)
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch

from common.errors import InvalidValue, UserError

from .diffusion import create_diffusion, create_transport
from .diffusion.losses import DiffusionLoss, TransportLoss
from .models.dit import DiT, SiT
from .sampling.samplers import (
    DIT_SAMPLER_DEFAULTS,
    SIT_SAMPLER_DEFAULTS,
    dit_sampler,
    guided_within,
    sit_sampler,
)
from .settings.checks import flag
from .settings.fields import check_types, from_record
from .settings.process import DIFFUSION_DEFAULTS, TRANSPORT_DEFAULTS, DiffusionSettings, TransportSettings
from .settings.sampler import GUIDANCE_INTERVAL, DiTSamplerSettings, SiTSamplerSettings


@dataclass(frozen=True)
class Family:
    name: str  # the prefix of its model names
    network: type  # the nn.Module its model names build
    process_name: str  # what the network learns to undo, in words (model cards)
    hub_tag: str  # the hub's tag for that process
    process_settings: type  # the process's options as settings (flags, YAML keys, checked records)
    process_defaults: dict  # their defaults: the process factory's keyword defaults
    make_loss: Callable  # (process options, training settings) -> loss_fn(model, x, y)
    noised: Callable  # (process options, latents, noise, fraction from noise 0 to data 1) -> (x_t, t)
    network_says: Callable  # ModelConfig -> the process options the network's output fixes
    predicts_velocity: Callable  # process options -> whether the network's output is a velocity
    sampler_settings: type  # its sampler's options as settings
    sampler_option: str  # the option that names the sampler
    sampler_usage: str  # how an error message tells the user to pick one
    sampler_defaults: dict  # its sample.py's defaults, the sampler's name included
    sampler_factory: Callable  # (name, num_steps, **options and process options) -> sample_fn
    noise_level: Callable  # process options -> (t -> noise level in [0, 1], 1: noise): guidance intervals
    default_model: str  # its training script's --model default
    diffusers_native: bool  # diffusers has its pipeline (DiTPipeline, a DDIM scheduler)

    @property
    def script(self) -> str:
        return f"train_{self.name.lower()}.py"

    def own_options(self) -> tuple[str, ...]:
        """Its sampler's options (not the steps and precision every sampler has), in the order exports record them."""
        return tuple(self.sampler_defaults)

    def options(self) -> tuple[str, ...]:
        """The sampler and process options that belong to this family alone."""
        return (*self.own_options(), *self.process_defaults)

    def process_of(self, settings) -> dict:
        """The process options of `settings` (training's, or any object with them), in the factory's order."""
        return {key: getattr(settings, key) for key in self.process_defaults}

    def loss(self, settings):
        """The training loss of these training settings."""
        return self.make_loss(self.process_of(settings), settings)

    def make_sampler(self, name: str | None = None, num_steps: int = 250, **options):
        """sample_fn of sampler `name` (default: sample.py's) over `num_steps`, with sampler and process options."""
        return self.sampler_factory(name or self.sampler_defaults[self.sampler_option], num_steps, **options)

    def recorded_process(self, model, recorded: dict | None) -> dict:
        """The process `model` was trained with: the weights file's record (`recorded`; None for official files),
        else the defaults, and what the network's output says."""
        return {**self.process_defaults, **(recorded or {}), **self.network_says(model.config)}

    def check_process_record(self, record: dict):
        """A weights file's recorded process: this family's options, each of its type and range (InvalidValue)."""
        settings = from_record(self.process_settings, record, where=f"the recorded {self.name} process")
        check_types(settings)
        settings.validate()

    def sampler_record(self, settings) -> dict:
        """The sampler, steps and guidance of `settings`: what exports record and sample.py takes as its defaults."""
        return {"num_sampling_steps": settings.num_sampling_steps, "cfg_scale": settings.cfg_scale,
                **{key: getattr(settings, key) for key in GUIDANCE_INTERVAL},
                **{key: getattr(settings, key) for key in self.own_options()}}

    def build_sampler(self, settings, process: dict):
        """sample_fn of these sampler settings (filled: fill_from_record) for a model trained with `process`."""
        options = {key: getattr(settings, key) for key in self.own_options()}
        sample_fn = self.make_sampler(options.pop(self.sampler_option), settings.num_sampling_steps, **options,
                                      **process)
        interval = tuple(default if getattr(settings, key, None) is None else getattr(settings, key)
                         for key, default in GUIDANCE_INTERVAL.items())  # unset (None): every noise level
        if interval == tuple(GUIDANCE_INTERVAL.values()):
            return sample_fn
        return guided_within(sample_fn, *interval, self.noise_level(process))

    def fill_from_record(self, settings, source, recorded: dict | None = None):
        """A sampler or process option of another family that the caller set (not None) is refused; then the
        options left None take the weights file's `recorded` sampler (sampler_record; its options only while the
        caller keeps its sampler), else the defaults. Steps and guidance left None mean "no record"
        (gen.settings.sampler.fill_defaults)."""
        for other in FAMILIES.values():
            for key in (key for key in other.options() if key not in self.options()):
                value = getattr(settings, key, None)
                if value is not None:
                    raise UserError(f"{flag(key)} {value} is a {other.name} flag, but {source} holds a {self.name} "
                                    f"model; drop it ({self.name} samples with {self.sampler_usage})")
        recorded = recorded or {}
        same_sampler = getattr(settings, self.sampler_option) in (None, recorded.get(self.sampler_option))
        for family in FAMILIES.values():  # every family's options, so that the settings are whole
            for key, default in family.sampler_defaults.items():
                if hasattr(settings, key) and getattr(settings, key) is None:  # training's: its family's only
                    mine = family is self and same_sampler and key in recorded
                    setattr(settings, key, recorded[key] if mine else default)
        for key in ("num_sampling_steps", "cfg_scale", *GUIDANCE_INTERVAL):
            if getattr(settings, key) is None:
                setattr(settings, key, recorded.get(key))


# -- DiT: ADM's Gaussian diffusion --------------------------------------------------------------------------------
def _diffusion_loss(process: dict, settings):
    return DiffusionLoss(create_diffusion(timestep_respacing="", **process), settings.weighting)  # every step


def _diffusion_noised(process: dict, latents, noise, fraction: float):
    diffusion = create_diffusion("", **process)  # all steps: t is the network's own timestep
    t = torch.full((len(latents),), round((1 - fraction) * (diffusion.num_timesteps - 1)), device=latents.device)
    return diffusion.q_sample(latents, t, noise), t


def _chain_fraction(process: dict):
    """DiT's model_fn receives the chain index: its noise level is the index over the chain's length."""
    steps = process.get("diffusion_steps", 1000)
    return lambda t: float(t.flatten()[0]) / steps


DIT_FAMILY = Family(
    name="DiT", network=DiT, process_name="Gaussian diffusion", hub_tag="diffusion",
    process_settings=DiffusionSettings,
    process_defaults=DIFFUSION_DEFAULTS,
    make_loss=_diffusion_loss, noised=_diffusion_noised,
    network_says=lambda config: {"learn_sigma": config.learn_sigma},
    predicts_velocity=lambda process: False,
    sampler_settings=DiTSamplerSettings, sampler_option="sampler", sampler_usage="--sampler ddpm|ddim",
    sampler_defaults=DIT_SAMPLER_DEFAULTS, sampler_factory=dit_sampler, noise_level=_chain_fraction,
    default_model="DiT-S/2-VCA", diffusers_native=True)


# -- SiT: stochastic interpolants -----------------------------------------------------------------------------------
def _transport_loss(process: dict, settings):
    return TransportLoss(create_transport(**process), settings.weighting, settings.cos_loss)


def _transport_noised(process: dict, latents, noise, fraction: float):
    t = torch.full((len(latents),), float(fraction), device=latents.device)
    return create_transport(**process).path.plan(t, noise, latents)[1], t


def _time_from_data(process: dict):
    """SiT's model_fn receives t from noise (0) to data (1): its noise level is 1 - t."""
    return lambda t: 1.0 - float(t.flatten()[0])


SIT_FAMILY = Family(
    name="SiT", network=SiT, process_name="flow", hub_tag="flow-matching",
    process_settings=TransportSettings, process_defaults=TRANSPORT_DEFAULTS,
    make_loss=_transport_loss, noised=_transport_noised, network_says=lambda config: {},
    predicts_velocity=lambda process: process.get("prediction") == "velocity",
    sampler_settings=SiTSamplerSettings, sampler_option="mode", sampler_usage="--mode ODE|SDE",
    sampler_defaults=SIT_SAMPLER_DEFAULTS, sampler_factory=sit_sampler, noise_level=_time_from_data,
    default_model="SiT-S/2-VCA", diffusers_native=False)

FAMILIES = {family.name: family for family in (DIT_FAMILY, SIT_FAMILY)}


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise InvalidValue(f"unknown model family {name!r}; expected {' or '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(model) -> Family:
    """The family of a network (or of its ModelConfig)."""
    return family_named(getattr(model, "config", model).family)


def recorded_process(model, recorded: dict | None) -> dict:
    """The process `model` was trained with, from a weights file's record (None: official files)."""
    return family_of(model).recorded_process(model, recorded)


def make_sampler(family: str, name: str | None = None, num_steps: int = 250, **options):
    """sample_fn for a model family: DiT `name` "ddpm" (default), "ddim" (option ddim_eta) or "dpm-solver" over
    `num_steps` evenly spaced steps; SiT `name` "ODE" (default) or "SDE" with SiT's options (path_type,
    prediction, loss_weight, train_eps, sample_eps, sampling_method, atol, rtol, reverse, diffusion_form,
    diffusion_norm, last_step, last_step_size, time_shift)."""
    return family_named(family).make_sampler(name, num_steps, **options)


def noise_level_of(family: str, diffusion_steps: int = 1000):
    """The noise level in [0, 1] (1: pure noise, REPA's time) of the `t` that a family's model_fn receives."""
    return family_named(family).noise_level({"diffusion_steps": diffusion_steps})
