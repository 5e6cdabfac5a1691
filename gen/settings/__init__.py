"""The library's settings: one dataclass per concern, each checking its own values; training combines them per
family. The command lines make their flags from these fields (gen/args.py) and YAML configs map onto them, so a
setting's name, type, default and help are written once.

    from gen.settings import SiTTrainingSettings
    settings = SiTTrainingSettings(model="SiT-Mini/4-VCA", vae="none", num_classes=10, max_steps=300)
"""
from .data import DIGITS_IMAGE_SIZE, DataSettings
from .evaluation import EvaluationSettings
from .fields import from_record, setting, unset
from .model import ModelSettings
from .optimisation import OptimisationSettings
from .process import (
    DIFFUSION_DEFAULTS,
    PROCESS_SETTINGS,
    TRANSPORT_DEFAULTS,
    DiffusionSettings,
    TransportSettings,
    check_process_record,
    recorded_process,
)
from .run import RunSettings
from .sampler import (
    MAX_SAMPLING_STEPS,
    OWN_KIND,
    DiTSamplerSettings,
    GuidanceSettings,
    SamplerSettings,
    SamplingSettings,
    SiTSamplerSettings,
    build_sampler,
    family_options,
    fill_defaults,
    fill_from_record,
    own_options,
    sampler_record,
)
from .training import TRAINING_SETTINGS, DiTTrainingSettings, SiTTrainingSettings, TrainingSettings

__all__ = ["MAX_SAMPLING_STEPS", "DIFFUSION_DEFAULTS", "DIGITS_IMAGE_SIZE", "OWN_KIND", "PROCESS_SETTINGS",
           "TRAINING_SETTINGS", "TRANSPORT_DEFAULTS", "DataSettings", "DiTSamplerSettings", "DiTTrainingSettings",
           "DiffusionSettings",
           "EvaluationSettings", "GuidanceSettings", "ModelSettings", "OptimisationSettings", "RunSettings",
           "SamplerSettings", "SamplingSettings", "SiTSamplerSettings", "SiTTrainingSettings", "TrainingSettings",
           "TransportSettings", "build_sampler", "family_options", "fill_defaults", "fill_from_record", "from_record",
           "own_options", "check_process_record", "recorded_process", "sampler_record", "setting", "unset"]
