"""The flag module: command-line flags made from the settings' dataclass fields (gen/settings), and parsed flags
turned back into settings. A flag's name, type, default, choices and help are its field's.

    add_training_flags(parser, "SiT")              # train_sit.py: a group per concern of SiTTrainingSettings
    settings = settings_from_flags(SiTTrainingSettings, parse_with_config(parser, argv))
    add_sampling_flags(parser)                      # sample.py: None means "what the weights file says"

One name means one thing everywhere: `--sampler` is DiT's (ddpm, ddim, dpm-solver), `--mode` SiT's (ODE, SDE),
`--sampling-method` the ODE or SDE integrator. Every flag can also come from `--config configs/X.yaml`
(common.cli.parse_with_config); the command line wins.
"""
import argparse
import dataclasses
import typing

from .checks import flag
from .fields import field_types
from .sampler import SamplingSettings
from .training import TRAINING_SETTINGS


def add_flags(parser, concern, *, owner=None, only=None, unset=False, keep=(), title=None, helps=None):
    """A flag per field of the settings dataclass `concern` (`only` these names), in a group titled `title` (default:
    the concern's title; "" for none). `owner`: the combined settings class whose defaults win. `unset`: the flags
    default to None ("not given": a weights file's record fills them), but the names in `keep`. `helps`: a
    command's own help for some fields."""
    owner = owner or concern
    types, owned = field_types(owner), {field.name: field for field in dataclasses.fields(owner)}
    names = [field.name for field in dataclasses.fields(concern) if only is None or field.name in only]
    title = concern.title if title is None else title
    group = parser.add_argument_group(title) if title else parser
    for name in names:
        add_field_flag(group, owned[name], types[name], unset=unset and name not in keep, help=(helps or {}).get(name))
    return parser


def add_field_flag(group, field, kind, unset: bool, help: str | None = None):
    meta = field.metadata
    if help is None:
        help = meta["help"]
    if unset and help is meta["help"]:
        otherwise = "" if field.default is None else f", else {field.default}"
        help = f"{help + '; ' if help else ''}default: the weights file's record{otherwise}"
    options = dict(default=None if unset else field.default, help=help)
    if meta["metavar"]:
        options["metavar"] = meta["metavar"]
    if meta.get("required"):
        options["required"] = True
    if kind is bool:
        options["action"] = "store_true" if meta["switch"] else argparse.BooleanOptionalAction
    else:
        if typing.get_origin(kind) is list:
            options["nargs"], kind = "+", typing.get_args(kind)[0]
        if meta["parse"] is not None or kind is not str:
            options["type"] = meta["parse"] or kind
        if meta["choices"] is not None:
            options["choices"] = list(meta["choices"])
    group.add_argument(flag(field.name), *meta["aliases"], **options)
    for constant, value in meta["constants"].items():
        group.add_argument(constant, dest=field.name, action="store_const", const=value,
                           help=f"the same as {flag(field.name)} {value}")


def add_sampling_flags(parser, *, keep=(), helps=None):
    """Steps, both families' sampler options and guidance, None unless given (but `keep`): a command that learns
    the family from a weights file fills them from its record (gen.family.Family.fill_from_record)."""
    names = [field.name for field in dataclasses.fields(SamplingSettings) if field.name != "precision"]
    return add_flags(parser, SamplingSettings, only=names, unset=True, keep=keep, title="sampler", helps=helps)


def add_training_flags(parser, family: str):
    """Every flag of train_dit.py / train_sit.py: a group per concern of the family's training settings."""
    settings = TRAINING_SETTINGS[family]
    for concern in settings.concerns:
        add_flags(parser, concern, owner=settings)
    return parser


def settings_from_flags(settings, parsed):
    """The settings dataclass `settings` from parsed flags (a Namespace); flags it has no field for (--debug,
    --config, a script's own) are left out."""
    return settings(**{field.name: getattr(parsed, field.name) for field in dataclasses.fields(settings)})
