"""YAML presets and study files read strictly: UTF-8 text of a sane size, plain values only (no anchors or
aliases, which let a few lines expand into gigabytes), and no key given twice (PyYAML keeps the last silently)."""
import yaml

from .errors import UserError

MAX_BYTES = 1 << 20  # a preset is a few hundred bytes; a larger file is not a config


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and repeated keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"an alias (*{event.anchor}) on line {event.start_mark.line + 1}: write the value "
                                 f"out, config files take no anchors or aliases")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.YAMLError(f"key {key!r} is given twice (line {key_node.start_mark.line + 1}): keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path, what: str):
    """The values of YAML file `path` (`what` names it in errors: "config file x.yaml"); one-line UserError else."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise UserError(f"{what} is larger than {MAX_BYTES:,} bytes, so it is no config; check the path")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{what} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as error:
        raise UserError(f"{what} is not valid YAML ({' '.join(str(error).split())})") from None
