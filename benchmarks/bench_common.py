"""Shared bits of the benchmark scripts: the device's name, timing, peak memory, and table printing."""
import gc
import os
import platform
import statistics
import sys
import time
import traceback

import torch
from torch.profiler import ProfilerActivity, profile


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_seconds(steps: dict, device: torch.device, warmup: int = 1, rounds: int = 5) -> dict:
    """Wall times {name: [seconds per round]} of several steps run interleaved (A, B, A, B, ...).

    Interleaving makes a load change on a shared machine hit every step alike, so per-round ratios stay
    sound where absolute times drift; take `median_ratio` of them.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    synchronize(device)
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: list[float], baseline: list[float]) -> float:
    """Median over rounds of time / baseline time, both from one `paired_seconds` run."""
    return statistics.median(t / b for t, b in zip(times, baseline, strict=True))


def _cpu_peak_bytes(step) -> int:
    """Peak of live CPU allocations during `step()`, replayed from the profiler's per-op memory records."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.events() if e.name == "[memory]" or e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def peak_memory_bytes(step, device: torch.device) -> int:
    """Extra memory at the peak of `step()` over what was allocated before it."""
    if device.type != "cuda":
        return _cpu_peak_bytes(step)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def print_table(title: str, header: list[str], rows: list[list]):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


class StreamTable:
    """A markdown table printed row by row, each flushed at once: a run cut short keeps every row it measured."""

    def __init__(self, title: str, header: list[str], widths: dict | None = None):
        self.widths = [max(len(name), (widths or {}).get(name, 0)) for name in header]  # widths: {column: least}
        print(f"\n### {title}\n", flush=True)
        self._print(header)
        print("| " + " | ".join("-" * w for w in self.widths) + " |", flush=True)

    def _print(self, cells):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, self.widths, strict=True)) + " |", flush=True)

    def row(self, cells: list):
        self._print(cells)

    def failed(self, known: list, reason: str):
        """A row whose measurement failed: the cells known before measuring, then "-", and the reason last."""
        self._print([*known, *["-"] * (len(self.widths) - len(known) - 1), f"failed: {reason}"])


def one_line(error: BaseException, limit: int = 200) -> str:
    """The error's type and the first line of its message, for a failed row; the traceback goes to stderr."""
    traceback.print_exception(error, file=sys.stderr)
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".replace("|", "/")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_out_of_memory(error: BaseException) -> bool:
    message = str(error).lower()  # cuBLAS says it its own way
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in message or "alloc_failed" in message


def release(device: torch.device):
    """Free what the last measurement left: its cycles, compiled graphs and the CUDA cache."""
    gc.collect()
    if "torch._dynamo" in sys.modules:  # compiled code caches can keep a deleted model's graphs alive
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def halving_batch(measure, batch: int, device: torch.device):
    """(batch used, measure(batch), batches that ran out of memory): on out-of-memory, halve the batch and retry."""
    out_of_memory = []
    while True:
        try:
            return batch, measure(batch), out_of_memory
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if batch == 1:
                raise RuntimeError(f"out of memory at every batch from {out_of_memory[0] if out_of_memory else 1} "
                                   "down to 1") from error
        out_of_memory.append(batch)  # outside the except block, so the failed try's tensors can be freed
        release(device)
        batch //= 2


def measure_rows(measure, keys: list, batch: int, device: torch.device):
    """(batch used, {key: result or why it failed}, note) of measure(batch) -> {key: result}, batch halved on
    out-of-memory; any other failure becomes the reason of every row, so the run goes on to the next."""
    out_of_memory = []
    try:
        batch, results, out_of_memory = halving_batch(measure, batch, device)
    except Exception as error:
        reason = one_line(error)
        results = dict.fromkeys(keys, reason)
    release(device)
    note = f"out of memory at batch {', '.join(map(str, out_of_memory))}" if out_of_memory else ""
    return batch, {key: results.get(key, "not measured") for key in keys}, note
