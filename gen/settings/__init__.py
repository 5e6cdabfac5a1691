"""The library's settings: one dataclass per concern, each checking its own values; training combines them per
family. The command lines make their flags from these fields (flags.py) and YAML configs map onto them, so a
setting's name, type, default and help are written once. checks.py holds the checks of single values.

    from gen.settings import SiTTrainingSettings
    settings = SiTTrainingSettings(model="SiT-Mini/4-VCA", vae="none", num_classes=10, max_steps=300)

The names below load with their module on first use: the models and the family registry (gen/family.py) import
one concern each, and the training settings, made from the registry, come after it.
"""
import importlib

_HOMES = {
    "data": ("DIGITS_IMAGE_SIZE", "DataSettings"),
    "evaluation": ("EvaluationSettings",),
    "fields": ("from_record", "setting", "unset"),
    "model": ("ModelSettings",),
    "optimisation": ("OptimisationSettings",),
    "process": ("DIFFUSION_DEFAULTS", "TRANSPORT_DEFAULTS", "DiffusionSettings", "TransportSettings"),
    "run": ("RunSettings",),
    "sampler": ("MAX_SAMPLING_STEPS", "DiTSamplerSettings", "GuidanceSettings", "SamplerSettings",
                "SamplingSettings", "SiTSamplerSettings", "fill_defaults"),
    "training": ("TRAINING_SETTINGS", "DiTTrainingSettings", "SiTTrainingSettings", "TrainingSettings"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


def __dir__():
    return __all__
