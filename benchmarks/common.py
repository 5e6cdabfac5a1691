"""Shared bits of the benchmark scripts: the device's name, timing, peak memory, and table printing."""
import os
import platform
import statistics
import time

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
