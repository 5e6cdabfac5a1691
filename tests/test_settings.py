"""The typed settings (gen/settings): each concern's fields, defaults and checks written once; the flags made from
them; training from a settings object without a command line."""
import ast
import dataclasses
import inspect
import pathlib

import pytest

import train_dit as train_dit_script
from common.cli import ArgumentParser
from common.errors import UserError
from gen.diffusion import create_diffusion, create_transport
from gen.run_log import log_path, read_log
from gen.sampling import DIT_SAMPLER_DEFAULTS, SIT_SAMPLER_DEFAULTS
from gen.settings import (
    TRAINING_SETTINGS,
    DataSettings,
    DiffusionSettings,
    DiTSamplerSettings,
    DiTTrainingSettings,
    EvaluationSettings,
    ModelSettings,
    OptimisationSettings,
    RunSettings,
    SiTSamplerSettings,
    SiTTrainingSettings,
    TrainingSettings,
    TransportSettings,
    from_record,
)
from gen.settings.extraction import ExtractionSettings
from gen.settings.flags import add_flags, settings_from_flags
from gen.settings.sample import GridSettings, ManySamplesSettings, WeightsSettings
from gen.training import train_dit, train_sit
from gen.training.entry import training_parser

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def defaults(cls, skip=()) -> dict:
    return {field.name: field.default for field in dataclasses.fields(cls) if field.name not in skip}


def signature_defaults(function, skip=()) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty and name not in skip}


def test_process_and_sampler_settings_follow_their_functions():
    assert defaults(DiffusionSettings) == signature_defaults(create_diffusion, skip=("timestep_respacing",))
    assert defaults(TransportSettings) == signature_defaults(create_transport)
    shared = ("num_sampling_steps", "precision")
    assert defaults(DiTSamplerSettings, shared) == DIT_SAMPLER_DEFAULTS
    assert defaults(SiTSamplerSettings, shared) == SIT_SAMPLER_DEFAULTS


@pytest.mark.parametrize("family", ["DiT", "SiT"])
def test_the_flags_are_the_fields(family):
    """Every field is a flag with its default, and no flag parsed yields the default settings."""
    settings = TRAINING_SETTINGS[family]
    parser = training_parser(family)
    dests = {action.dest for action in parser._actions} - {"help", "debug"}
    assert dests == {field.name for field in dataclasses.fields(settings)}
    assert settings_from_flags(settings, parser.parse_args([])) == settings()
    parsed = settings_from_flags(settings, parser.parse_args(["--lr", "3e-4", "--no-random-flip", "--grid-classes",
                                                              "1", "2", "--model", f"{family}-Mini/4"]))
    assert (parsed.lr, parsed.random_flip, parsed.grid_classes, parsed.model) == (3e-4, False, [1, 2],
                                                                                 f"{family}-Mini/4")


def test_unset_flags_say_where_their_value_comes_from():
    parser = add_flags(ArgumentParser(), DiffusionSettings, unset=True)
    assert vars(parser.parse_args([])) == {"debug": False, **dict.fromkeys(defaults(DiffusionSettings))}
    help_text = parser.format_help()
    assert "default: the weights file's record, else linear" in " ".join(help_text.split())


@pytest.mark.parametrize(("concern", "values", "phrase"), [
    (DataSettings, dict(num_classes=0), "--num-classes must be at least 1"),
    (DataSettings, dict(data_path="/no/such/folder"), "--data-path /no/such/folder is not a folder"),
    (ModelSettings, dict(model="DiT-Huge/3"), "DiT-Huge/3"),
    (ModelSettings, dict(class_dropout_prob=1.0), "--class-dropout-prob must lie in [0.0, 1.0)"),
    (OptimisationSettings, dict(), "give --epochs and/or --max-steps"),
    (OptimisationSettings, dict(max_steps=10, lr=0.0), "--lr must be a positive number"),
    (DiffusionSettings, dict(diffusion_steps=0), "--diffusion-steps must be at least 1"),
    (RunSettings, dict(log_with="carrier-pigeon"), "unknown tracker"),
    (EvaluationSettings, dict(eval_samples=3), "--eval-samples must be at least 4"),
    (DiTSamplerSettings, dict(num_sampling_steps=0), "--num-sampling-steps must be at least 1"),
    (DiTSamplerSettings, dict(ddim_eta=-0.5), "--ddim-eta must be at least 0.0"),
    (SiTSamplerSettings, dict(num_sampling_steps=10**6), "--num-sampling-steps must lie in [1, 100000]"),
    (SiTSamplerSettings, dict(atol=0.0), "--atol must be a positive number"),
    (SiTSamplerSettings, dict(last_step_size=1.0), "--last-step-size must lie in [0.0, 1.0)"),
    (WeightsSettings, dict(ckpt="/no/such/model.safetensors"), "--ckpt /no/such/model.safetensors not found"),
    (WeightsSettings, dict(ckpt=__file__, seed=-1), "--seed must lie in [0, 4294967295]"),
    (GridSettings, dict(nrow=0), "--nrow must be at least 1"),
    (ManySamplesSettings, dict(num_fid_samples=0), "--num-fid-samples must be at least 1"),
    (ExtractionSettings, dict(output="unused", vae="none"), "--vae none trains on pixels directly"),
    (ExtractionSettings, dict(output="unused", shard_size=0), "--shard-size must be at least 1"),
])
def test_each_concern_checks_its_own_values(concern, values, phrase):
    with pytest.raises(UserError) as error:
        concern(**values).validate()
    assert phrase in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("settings", TRAINING_SETTINGS.values(), ids=TRAINING_SETTINGS)
def test_a_familys_settings_are_one_flat_class_of_its_concerns_fields(settings):
    assert [field.name for field in dataclasses.fields(settings)] == [
        field.name for concern in settings.concerns for field in dataclasses.fields(concern)]
    assert not any(issubclass(settings, concern) for concern in settings.concerns)  # fields lent, not inherited
    assert settings().model == settings.family_entry().default_model


def test_the_combined_settings_validate_every_concern():
    with pytest.raises(UserError, match="--num-sampling-steps must be at least 1"):
        DiTTrainingSettings(max_steps=1, num_sampling_steps=0).check()  # every concern's checks, the sampler's too


def test_an_eval_ref_is_read_only_when_evaluating(tmp_path):
    DiTTrainingSettings(max_steps=1, eval_ref=str(tmp_path / "absent.npz")).check()  # --eval-every 0: unused
    with pytest.raises(UserError, match="absent.npz not found"):
        DiTTrainingSettings(max_steps=1, eval_ref=str(tmp_path / "absent.npz"), eval_every=5).check()


@pytest.mark.parametrize(("values", "phrase"), [
    (dict(lr="fast"), "--lr = 'fast' is not a number"),
    (dict(max_steps=2.5), "--max-steps = 2.5 is not an integer"),
    (dict(random_flip="no"), "--random-flip = 'no' is not true or false"),
    (dict(grid_classes=[1, "2"]), "--grid-classes = [1, '2'] is not a non-empty list of integers"),
    (dict(sampler="ddpn"), "--sampler = 'ddpn' is not one of ['ddpm', 'ddim', 'dpm-solver']"),
    (dict(max_grad_norm=None, lr=None), "--lr = None is not a number"),
])
def test_a_python_callers_wrong_type_is_one_line(values, phrase):
    with pytest.raises(UserError) as error:
        DiTTrainingSettings(**{"max_steps": 1, **values}).check()
    assert phrase in str(error.value) and "\n" not in str(error.value)


def test_a_path_object_is_taken_as_its_text(tmp_path):
    settings = DiTTrainingSettings(max_steps=1, data_path=tmp_path)
    settings.check()
    assert settings.data_path == str(tmp_path)
    with pytest.raises(UserError, match="use DiTTrainingSettings or SiTTrainingSettings"):
        TrainingSettings(max_steps=1).check()


def test_the_combined_checks_join_concerns():
    with pytest.raises(UserError, match="null class"):
        DiTTrainingSettings(max_steps=1, cfg_scale=4.0, class_dropout_prob=0.0).check()
    with pytest.raises(UserError, match="train_sit.py trains SiT models; use train_dit.py"):
        SiTTrainingSettings(model="DiT-S/2", max_steps=1).check()
    with pytest.raises(UserError, match="--eval-ref"):
        DiTTrainingSettings(max_steps=1, data_path=str(ROOT), eval_every=10).check()


def test_a_part_and_a_record_round_trip():
    settings = SiTTrainingSettings(path_type="GVP", max_steps=3)
    assert TransportSettings(**settings.process()) == TransportSettings(path_type="GVP")
    assert list(settings.process()) == list(signature_defaults(create_transport))  # the export records this order
    assert list(DiTTrainingSettings().process()) == list(signature_defaults(create_diffusion, ("timestep_respacing",)))
    assert from_record(SiTTrainingSettings, settings.to_dict()) == settings
    with pytest.raises(UserError, match=r"unknown setting\(s\) \['max_step'\]"):
        from_record(SiTTrainingSettings, {"max_step": 3})
    assert from_record(SiTTrainingSettings, {"max_step": 3, "lr": 0.1}, strict=False).lr == 0.1  # an older record


def test_the_scripts_parse_into_settings():
    settings = train_dit_script.parse_args(["--model", "DiT-Mini/4", "--max-steps", "5", "--tf32"])
    assert isinstance(settings, DiTTrainingSettings)
    assert (settings.model, settings.max_steps, settings.precision) == ("DiT-Mini/4", 5, "tf32")


@pytest.mark.parametrize(("trainer", "settings_class"), [(train_sit, SiTTrainingSettings),
                                                          (train_dit, DiTTrainingSettings)])
def test_training_from_a_settings_object(tmp_path, trainer, settings_class):
    family = settings_class.family
    settings = settings_class(model=f"{family}-Mini/4", vae="none", num_classes=10, global_batch_size=8, max_steps=2,
                              log_every=1, ckpt_every=2, sample_every=0, num_sampling_steps=2, log_with="none",
                              results_dir=str(tmp_path / "run"), random_flip=False)
    before = dataclasses.replace(settings)
    run = trainer(settings)
    assert [row["step"] for row in read_log(log_path(run)) if "loss" in row] == [1, 2]
    assert settings == before  # filled in and resolved on a copy, not on the caller's object
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_below_the_command_lines_nothing_reads_argparse():
    """Only the flag module and the command-line conventions know argparse; the library takes settings."""
    allowed = {ROOT / "gen" / "settings" / "flags.py", ROOT / "common" / "cli.py"}
    offenders = []
    for path in [*ROOT.joinpath("gen").rglob("*.py"), *ROOT.joinpath("fid").rglob("*.py"),
                 *ROOT.joinpath("common").rglob("*.py")]:
        if path in allowed:
            continue
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        namespaces = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} & {"Namespace"}
        if "argparse" in names or namespaces:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
