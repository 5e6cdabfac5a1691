"""A training run's records: `log.jsonl`, one JSON object per line appended as the run goes (the one reader and
writer), and the name of its settings file, `args.json`.

A kill in the middle of an append leaves a torn last line: `read_log` skips it, and `append_record` cuts it off
before writing, so a resumed run's log stays one object per line.
"""
import json
import os

from common.errors import UserError

RUN_RECORD = "args.json"  # the run's settings, the first file a run writes: it marks the folder as a run's

LOG_NAME = "log.jsonl"


def log_path(results_dir) -> str:
    return os.path.join(results_dir, LOG_NAME)


def read_log(path) -> list[dict]:
    """The JSON objects of a `log.jsonl`, one per line; a torn last line is skipped, a bad line before it refused."""
    with open(path) as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise UserError(f"{path} line {number} is not JSON; fix or delete that line") from None
    return records


def append_record(path, record: dict):
    """Append `record` as one line, first cutting off a torn last line that a killed run left."""
    cut_torn_tail(path)
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def cut_torn_tail(path):
    """End `path` with a newline: a last line without one is cut off when it is not JSON (a torn append), and
    closed when it is (a complete record some other writer left unterminated)."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        content = handle.read()
        start = content.rfind(b"\n") + 1
        try:
            json.loads(content[start:])
        except ValueError:
            handle.truncate(start)
        else:
            handle.write(b"\n")


def logged_steps(path, key: str) -> set[int]:
    """Steps whose record holds `key` (a missing log: none)."""
    if not os.path.isfile(path):
        return set()
    return {record["step"] for record in read_log(path) if key in record}
