"""Command-line helpers shared by sample.py and the training scripts: YAML presets under CLI flags.

    args = parse_with_config(parser)   # `--config configs/X.yaml`; flags given on the command line win
"""
import argparse
import os

import yaml


def parse_with_config(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse `argv` with the values of `--config FILE` (YAML; keys are flag names with - or _) as defaults.

    Unknown keys and values outside a flag's choices stop with an error naming the key and the file.
    """
    if not any("--config" in action.option_strings for action in parser._actions):
        parser.add_argument("--config", default=None, help="YAML file of flag values; command-line flags win")
    config_path = _config_path(argv)
    if config_path is not None:
        parser.set_defaults(**read_config(parser, config_path))
    return parser.parse_args(argv)


def _config_path(argv) -> str | None:
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    known, _ = pre_parser.parse_known_args(argv)
    return known.config


def read_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """The YAML file's values keyed by the parser's destinations, checked against its flags."""
    if not os.path.isfile(path):
        parser.error(f"config file {path} not found; pass the path of a YAML file such as configs/X.yaml")
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        parser.error(f"config file {path} must hold a mapping of flag names to values")
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
    config = {str(key).lstrip("-").replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(config) - set(actions))
    if unknown:
        parser.error(f"config file {path}: unknown key(s) {unknown}; valid keys are the flags: "
                     f"{sorted(k.replace('_', '-') for k in actions)}")
    for dest, value in config.items():
        action = actions[dest]
        items = value if isinstance(value, list) else [value]
        if action.choices is not None and any(item not in action.choices for item in items):
            parser.error(f"config file {path}: {dest} = {value!r} is not one of {list(action.choices)}")
        action.required = False  # a value from the file satisfies a required flag
    return config
