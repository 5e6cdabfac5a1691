"""DiT's and SiT's training entry points, shared by train_dit.py, train_sit.py and Python:

    import gen
    results_dir = gen.train_model("SiT-Mini/4-VCA", config="configs/demo.yaml", max_steps=300,
                                  results_dir="results/api")   # what train_sit.py --config ... --max-steps 300 runs

    from gen.settings import SiTTrainingSettings
    train_sit(SiTTrainingSettings(model="SiT-Mini/4-VCA", vae="none", num_classes=10, max_steps=300))

train_model's settings are the command line's, named by their flags (`max_steps` or `max-steps`) and checked as
a YAML config's values are: an unknown name or a bad value is a one-line UserError. `config` is read first and the
keywords win over it, as flags do.
"""
import os

from common.cli import ArgumentParser, check_config, parse_with_config

from ..models.zoo import model_config
from ..settings import TRAINING_SETTINGS
from ..settings.flags import add_training_flags, settings_from_flags
from .loop import train


def training_parser(family: str, description: str | None = None) -> ArgumentParser:
    """Every training flag of `family` ("DiT" or "SiT")."""
    prog = f"train_{family.lower()}.py" if description else "gen.train_model"
    return add_training_flags(ArgumentParser(prog=prog, description=description), family)


def parse_training_flags(family: str, argv=None, description: str | None = None):
    """The family's training settings from command-line flags (and `--config FILE`)."""
    return settings_from_flags(TRAINING_SETTINGS[family], parse_with_config(training_parser(family, description), argv))


def train_settings(settings) -> str:
    """Train with a family's training settings (DiTTrainingSettings: ADM's Gaussian diffusion over every step of
    its chain; SiTTrainingSettings: SiT's interpolant transport), with its loss; returns the results folder."""
    return train(settings, loss_fn=settings.family_entry().loss(settings))


train_dit = train_sit = train_settings  # the scripts' names for it


def train_model(model: str, config=None, **settings) -> str:
    """Train `model` (a zoo name such as "DiT-S/2-VCA") as its family's script would with these settings;
    returns the results folder, which holds model.safetensors when the run ends."""
    family = model_config(model).family  # an unknown name fails here, in one line
    parser = training_parser(family)
    chosen = check_config(parser, settings, "train_model")
    parsed = parse_with_config(parser, ["--model", model] + (["--config", os.fspath(config)] if config else []))
    for key, value in chosen.items():  # the keywords win over the config, as flags do
        setattr(parsed, key, value)
    return train_settings(settings_from_flags(TRAINING_SETTINGS[family], parsed))
