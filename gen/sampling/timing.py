"""Seconds per stage of sampling (network, VAE decode, PNG writing, packing), so that a slow stage shows in the
log: `stats["seconds"][stage]` sums over batches; None stats time nothing."""
import contextlib
import time

import torch


@contextlib.contextmanager
def stage(stats: dict | None, name: str, device=None):
    """Add the block's seconds to `stats["seconds"][name]`; CUDA work is waited for, so it counts where it ran."""
    if stats is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        if device is not None and torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        seconds = stats.setdefault("seconds", {})
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started


def stage_summary(seconds: dict, total: float) -> str:
    """'network 61.2 s (86 %), VAE decode 4.1 s (6 %), ...' in the order the stages ran, then the rest."""
    parts = [f"{name} {value:.1f} s ({100 * value / max(total, 1e-9):.0f} %)" for name, value in seconds.items()]
    other = total - sum(seconds.values())
    if other > 0.05 * total:
        parts.append(f"other {other:.1f} s ({100 * other / total:.0f} %)")
    return ", ".join(parts)
