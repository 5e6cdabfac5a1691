"""What every command line shares: one-line errors with exit status 2, and YAML presets under CLI flags.

    if __name__ == "__main__":
        run_command(main)                  # UserError, bad flags, OS errors -> one line on stderr, exit 2
    args = parse_with_config(parser)   # `--config configs/X.yaml`; flags given on the command line win
"""
import argparse
import copy
import difflib
import errno
import json
import os
import signal
import sys
import threading

from .errors import UserError
from .yaml_file import read_yaml

DEBUG_ENV = "VCA_GEN_DEBUG"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and "(default: ...)" after every flag that has a default, help text or not."""

    def add_argument(self, action):
        optional = action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
        if not action.help and optional and action.default not in (None, argparse.SUPPRESS):
            action = copy.copy(action)  # argparse shows no line for a flag without help: give it one
            action.help = "(default: %(default)s)"
        super().add_argument(action)

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)  # None says nothing


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage is one `--help` away) and name the flag meant for a misspelt
    one, with a `--debug` flag; `--help` shows every default. Flags are taken whole, never abbreviated (`--mode`
    is not `--model`): a prefix would turn a typo into another flag's error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help=f"show tracebacks (also {DEBUG_ENV}=1)")

    def parse_known_args(self, args=None, namespace=None):
        """Unknown flags are named first: argparse would otherwise blame a positional for their values."""
        words = sys.argv[1:] if args is None else list(args)
        if not any(isinstance(action, argparse._SubParsersAction) for action in self._actions):
            flags = words[:words.index("--")] if "--" in words else words  # after "--", all is positional
            unknown = [word for word in flags if word.startswith("--")
                       and word.split("=")[0] not in self._option_string_actions]
            if unknown:
                self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return super().parse_known_args(args, namespace)

    def error(self, message):
        raise UserError(f"{message}{self.suggestion(message)} (see {self.prog} --help)")

    def suggestion(self, message: str) -> str:
        """'; did you mean --x?' for the unknown flags of an "unrecognized arguments" message."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        words = [word.split("=")[0] for word in message.split(":", 1)[1].split() if word.startswith("--")]
        meant = [f"{' or '.join(close_names(word, known))} for {word}" for word in words if close_names(word, known)]
        return f"; did you mean {', '.join(meant)}?" if meant else ""


def close_names(word: str, names) -> list[str]:
    """The names `word` was most likely meant to be: the closest, and any others nearly as close."""
    scored = sorted(((difflib.SequenceMatcher(None, word, name).ratio(), name) for name in names), reverse=True)
    return [name for score, name in scored if score >= 0.6 and score >= scored[0][0] - 0.1][:2]


def run_command(main, argv=None):
    """Run `main(argv)`; expected failures end as one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    previous = set_handler(signal.SIGTERM, stop_on_sigterm)
    for stream in (sys.stdout, sys.stderr):  # a path of non-UTF-8 bytes is shown escaped, not a crash mid-run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        return main(argv)
    except (UserError, OSError) as error:
        if debug:
            raise
        print(f"error: {describe(error)}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt as stop:
        if debug:
            raise
        terminated = isinstance(stop, Terminated)
        print(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}; finished checkpoints and sample files are "
              f"intact: rerun to resume", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM if terminated else 130)
    finally:
        set_handler(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`): ends the command as Ctrl-C does, through every cleanup."""


def stop_on_sigterm(signum, frame):
    raise Terminated()


def set_handler(signum, handler):
    """Install `handler` for `signum` from the main thread (elsewhere Python refuses); returns the previous one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


def describe(error: BaseException) -> str:
    """The error as one line; a full disk says so."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (f"no space left on the device writing {error.filename or 'a file'}; free some space and rerun "
                f"(finished checkpoints and files are intact)")
    if isinstance(error, OSError) and not isinstance(error, UserError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    text = str(error)
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: its own message is the last line
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split()) or type(error).__name__


def none_or_str(value):
    """A flag type whose value may be None (`none` on the command line, null in YAML)."""
    return None if value in (None, "None", "none") else value


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
    pre_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre_parser.add_argument("--config", default=None)
    known, _ = pre_parser.parse_known_args(argv)
    return known.config


def read_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """The YAML file's values keyed by the parser's destinations, checked against its flags."""
    if not os.path.isfile(path):
        parser.error(f"config file {path} not found; pass the path of a YAML file such as configs/X.yaml")
    try:
        values = read_yaml(path, f"config file {path}") or {}
    except UserError as error:
        parser.error(str(error))
    if not isinstance(values, dict):
        parser.error(f"config file {path} must hold a mapping of flag names to values")
    return check_config(parser, values, f"config file {path}")


def check_config(parser: argparse.ArgumentParser, values: dict, where: str) -> dict:
    """`values` (flag names with - or _) keyed by the parser's destinations, each checked against its flag's type,
    nargs and choices as the command line would be; `where` names the source in errors."""
    actions = {}
    for action in parser._actions:  # an alias sharing a dest (--tf32 for --precision) leaves the flag its own
        if action.dest not in ("help", "config") and (action.dest not in actions or
                                                      f"--{action.dest.replace('_', '-')}" in action.option_strings):
            actions[action.dest] = action
    config = {str(key).lstrip("-").replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(config) - set(actions))
    if unknown:
        meant = [f"{' or '.join(close_names(key, actions))} for {key}" for key in unknown if close_names(key, actions)]
        hint = f"did you mean {', '.join(meant)}? " if meant else ""
        parser.error(f"{where}: unknown key(s) {unknown}; {hint}the keys are the flags of {parser.prog}")
    for dest, value in config.items():
        config[dest] = typed_value(parser, actions[dest], value, where)
        actions[dest].required = False  # a value from the file satisfies a required flag
    return config


def typed_value(parser, action: argparse.Action, value, where: str):
    """A YAML value as the flag's type; anything the command line would refuse (or read otherwise) stops here."""
    key = action.dest
    if action.nargs == 0:  # a switch: store_true or --flag/--no-flag
        if not isinstance(value, bool) and not (value is None and action.default is None):
            hint = f"; write {value.lower()} without quotes" if str(value).lower() in ("true", "false") else ""
            parser.error(f"{where}: {key} = {shown(value)} must be true or false{hint}")
        return value
    if value is None:
        if action.default is not None and action.type is not none_or_str:
            parser.error(f"{where}: {key} = null, but it needs {expected(action)}; give a value or drop the key")
        return None
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(value, list) and not many:
        parser.error(f"{where}: {key} = {shown(value)} is a list, but it needs one value: {expected(action)}")
    items = value if isinstance(value, list) else [value]
    if many and action.nargs == "+" and not items:
        parser.error(f"{where}: {key} = [] is empty; give at least one value")
    converted = [typed_item(parser, action, item, where) for item in items]
    return converted if many else converted[0]


def typed_item(parser, action, item, where: str):
    key, convert = action.dest, action.type or str
    fits = (not isinstance(item, (bool, dict, list)) and item is not None and
            not (convert is int and isinstance(item, float)))  # 4.0 or 4.7 for an integer is a slip, not 4 or 5
    try:
        value = convert(str(item)) if fits else None
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        fits = False
    if not fits:
        parser.error(f"{where}: {key} = {shown(item)} is not {expected(action)}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{where}: {key} = {shown(item)} is not one of {list(action.choices)}")
    return value


def shown(value) -> str:
    return json.dumps(value, default=str)  # as YAML spells it: true, "false", [1, 2]


def expected(action) -> str:
    names = {int: "an integer", float: "a number"}
    return names.get(action.type, "a string" if action.choices is None else f"one of {list(action.choices)}")
