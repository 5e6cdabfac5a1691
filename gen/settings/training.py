"""Everything train_dit.py and train_sit.py take, as one flat settings class per family made from the concerns'
fields (data, model, optimisation, process, objective, run, guidance, sampler, evaluation):

    settings = SiTTrainingSettings(model="SiT-Mini/4-VCA", image_size=16, num_classes=10, vae="none", max_steps=300)
    settings.lr, settings.mode          # the optimisation's and the sampler's fields, by their flag names

The concerns lend their fields and their checks, nothing else: each concern's `validate` checks its own values,
and `check` runs them all in order, then the rules that join two concerns.
"""
import dataclasses
from typing import ClassVar

from common.errors import InvalidValue, UserError

from ..family import FAMILIES, Family
from ..models.zoo import model_config
from .data import DataSettings
from .evaluation import EvaluationSettings
from .fields import check_types, redefault
from .model import ModelSettings
from .objective import ObjectiveSettings
from .optimisation import OptimisationSettings
from .run import RunSettings
from .sampler import GuidanceSettings

GUIDANCE_HELP = "classifier-free guidance of grids, final samples and evaluations (1: none)"


def concerns_of(family: Family) -> tuple[type, ...]:
    """A family's concerns, in the order of --help's groups and of its settings' fields."""
    return (DataSettings, ModelSettings, OptimisationSettings, family.process_settings, ObjectiveSettings,
            RunSettings, GuidanceSettings, family.sampler_settings, EvaluationSettings)


class TrainingSettings:
    """What both families' training settings do; `training_settings` makes each family's class with its fields."""
    family: ClassVar[str | None] = None  # the family's name: the classes made below say it
    concerns: ClassVar[tuple[type, ...]] = ()

    def __init__(self, **values):
        raise InvalidValue("TrainingSettings is the families' shared base; use DiTTrainingSettings or "
                           "SiTTrainingSettings")

    digits = DataSettings.digits  # the concerns' helpers that the training reads
    fill_defaults = DataSettings.fill_defaults
    lightning_options = ModelSettings.lightning_options

    def check(self) -> list[str]:
        """Fill the data's defaults, then check every value before the VAE, the data or the model load; returns
        what to tell the user."""
        check_types(self)
        notes = self.fill_defaults()
        family, mine = FAMILIES[model_config(self.model).family], self.family_entry()  # an unknown name fails here
        if family is not mine:
            raise UserError(f"{mine.script} trains {mine.name} models; use {family.script} for --model {self.model}")
        if self.init_from is not None and self.resume is not None:
            raise UserError("--init-from starts a new run from weights, --resume continues one; give only one")
        for concern in self.concerns:
            concern.validate(self)
        depth = model_config(self.model).depth
        if self.enc_type is not None and self.encoder_depth > depth:
            raise UserError(f"--encoder-depth {self.encoder_depth} is past the last of {self.model}'s {depth} blocks; "
                            f"pick a block in 1..{depth} (REPA: 8 of SiT-XL's 28, about a third)")
        if self.cos_loss and not mine.predicts_velocity(self.process()):
            raise UserError("--cos-loss compares velocities: it needs a SiT model with --prediction velocity")
        if self.cfg_scale > 1 and self.class_dropout_prob <= 0:
            raise UserError("--cfg-scale > 1 needs the null class that --class-dropout-prob > 0 trains; "
                            "pass --cfg-scale 1 or a positive --class-dropout-prob")
        if self.grid_classes and any(not 0 <= c < self.num_classes for c in self.grid_classes):
            raise UserError(f"--grid-classes {self.grid_classes} must lie in [0, {self.num_classes})")
        if self.eval_every and self.evaluation_features() == "inception" and self.eval_ref is None:
            raise UserError("--eval-every with Inception features needs --eval-ref REF.npz (an ADM reference batch, "
                            "e.g. VIRTUAL_imagenet256_labeled.npz, or one from `python -m fid ref`)")
        return notes

    @classmethod
    def family_entry(cls) -> Family:
        """The family's entry in the registry (gen/family.py)."""
        return FAMILIES[cls.family]

    def evaluation_features(self) -> str:
        """The feature network: --eval-features, else the digits network for the built-in digits, else Inception."""
        if self.eval_features != "auto":
            return self.eval_features
        return "digits" if self.digits else "inception"

    def process(self) -> dict:
        """The diffusion (DiT) or transport (SiT) settings: what the loss, the sampler and the export use, in
        create_diffusion's or create_transport's order (the export's header records them as written)."""
        return self.family_entry().process_of(self)

    def sample_fn(self):
        """The sampler of grids, final samples and evaluations."""
        return self.family_entry().build_sampler(self, self.process())

    def sampler_record(self) -> dict:
        return self.family_entry().sampler_record(self)

    def to_dict(self) -> dict:
        """Every field by name: args.json, the checkpoint's record and the trackers' config."""
        return dataclasses.asdict(self)


def training_settings(family: Family) -> type:
    """`family`'s training settings: one dataclass with every field of its concerns, in their order; its model by
    default, and the guidance's help as training uses it."""
    concerns = concerns_of(family)
    own = {"model": redefault(ModelSettings, "model", family.default_model),
           "cfg_scale": redefault(GuidanceSettings, "cfg_scale", GuidanceSettings.cfg_scale, GUIDANCE_HELP)}
    fields, seen = [], set()
    for concern in concerns:
        for field in dataclasses.fields(concern):
            if field.name in seen:
                raise TypeError(f"{concern.__name__}.{field.name} is declared by two concerns of {family.name}")
            seen.add(field.name)
            fields.append((field.name, field.type, own.get(field.name) or redefault(concern, field.name,
                                                                                      field.default)))
    return dataclasses.make_dataclass(f"{family.name}TrainingSettings", fields, bases=(TrainingSettings,),
                                      namespace={"family": family.name, "concerns": concerns,
                                                 "__module__": __name__})


TRAINING_SETTINGS = {name: training_settings(family) for name, family in FAMILIES.items()}
DiTTrainingSettings, SiTTrainingSettings = TRAINING_SETTINGS["DiT"], TRAINING_SETTINGS["SiT"]  # by name, for Python
