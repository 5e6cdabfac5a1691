"""How a setting is declared: a dataclass field whose metadata holds its help, choices and flag spelling, so that
gen/settings/flags.py can make the command-line flag from it and a YAML key maps onto it (Hugging Face's
`HfArgumentParser` habit).

    lr: float = setting(1e-4, "AdamW's learning rate")
    grid_classes: list[int] | None = setting(None, "a grid row per class", metavar="C")
"""
import dataclasses
import os
import typing

from common.errors import InvalidValue

from .checks import flag


def setting(default, help: str | None = None, *, choices=None, parse=None, switch: bool = False,
            aliases: tuple[str, ...] = (), metavar: str | None = None, constants: dict | None = None,
            required: bool = False):
    """A field with a default. `parse` reads the flag's text (default: the field's type); `switch`: a bool that is
    a plain `--flag` (no `--no-flag`); `aliases`: more flag spellings; `constants`: flags that set one value
    (`{"--tf32": "tf32"}`, DiT's spelling of `--precision tf32`); `required`: the command line must give it."""
    return dataclasses.field(default=default, metadata=dict(help=help, choices=choices, parse=parse, switch=switch,
                                                            aliases=aliases, metavar=metavar,
                                                            constants=constants or {}, required=required))


def redefault(concern, name: str, default, help: str | None = None):
    """`concern`'s field `name` with another default (and help): a combined settings class's own choice."""
    metadata = dict(concern.__dataclass_fields__[name].metadata)
    if help is not None:
        metadata["help"] = help
    return dataclasses.field(default=default, metadata=metadata)


def field_types(cls) -> dict[str, type]:
    """{name: type}, `int | None` read as int; a list as list[item type]."""
    types = {}
    for name, hint in typing.get_type_hints(cls).items():
        if typing.get_origin(hint) is typing.ClassVar:
            continue
        options = [a for a in typing.get_args(hint) if a is not type(None)] if is_optional(hint) else [hint]
        types[name] = options[0]
    return types


def is_optional(hint) -> bool:
    return type(None) in typing.get_args(hint)


KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def fits(value, kind) -> bool:
    """`value` is of the field type `kind` as the flag would have read it (an int is a number; a bool is no int)."""
    if typing.get_origin(kind) is list:
        return isinstance(value, list) and bool(value) and all(fits(item, typing.get_args(kind)[0]) for item in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_types(settings):
    """Every field of a settings object holds its type and one of its choices: a Python caller's slip is one line,
    as the same value on the command line would be."""
    hints, kinds = typing.get_type_hints(type(settings)), field_types(type(settings))
    for field in dataclasses.fields(settings):
        value, kind, choices = getattr(settings, field.name), kinds[field.name], field.metadata.get("choices")
        name = flag(field.name)
        if value is None and is_optional(hints[field.name]):
            continue
        if kind is str and isinstance(value, os.PathLike):  # a pathlib.Path for a folder or file: its text
            value = os.fspath(value)
            setattr(settings, field.name, value)
        if not fits(value, kind):
            listed = "a non-empty list of integers" if typing.get_origin(kind) is list else str(kind)
            wanted = KIND_NAMES.get(kind, listed)
            raise InvalidValue(f"{name} = {value!r} is not {wanted}")
        if choices is not None and value not in choices:
            raise InvalidValue(f"{name} = {value!r} is not one of {list(choices)}")


def unset(cls, **given):
    """`cls` with every field None but `given`: "not chosen yet", filled from a weights file's record later."""
    return cls(**{**dict.fromkeys(field.name for field in dataclasses.fields(cls)), **given})


def from_record(cls, record: dict, *, strict: bool = True, where: str = "settings"):
    """`cls` from a dict of field values (a run's args.json, keywords from Python). strict: an unknown key is a
    one-line error; else it is skipped (a record written by another version)."""
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(record) - names)
    if unknown and strict:
        raise InvalidValue(f"{where}: unknown setting(s) {unknown}; valid ones: {sorted(names)}")
    return cls(**{key: value for key, value in record.items() if key in names})
