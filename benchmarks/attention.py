"""Forward+backward time and peak memory of one attention module: VCA (fast and reference) against MHSA.

    python benchmarks/attention.py                 # fp32 on the CPU, bf16 on a GPU
    python benchmarks/attention.py --sides 16 32   # a subset of grids
    python benchmarks/attention.py --vca-kernels torch triton --skip-reference

Square grids of side 16, 32, 64 (N = 256, 1024, 4096) at C = 384 / 6 heads and C = 1152 / 16 heads,
projections included. The batch holds about the same number of tokens at every N. Ratios are against MHSA
(scaled_dot_product_attention; flash attention on a GPU) measured in the same run, the kinds interleaved
(A, B, A, B, ...) and the ratio the median of the per-round ratios. --vca-kernels auto torch triton: a VCA
row per kernel choice. Each row is printed as it is measured; a row that fails says why and the run goes on
(on out-of-memory the batch is halved first).
"""
import argparse
import datetime
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (  # noqa: E402
    StreamTable,
    device_name,
    is_out_of_memory,
    measure_rows,
    median_ratio,
    one_line,
    paired_seconds,
    peak_memory_bytes,
)

from gen.models import Attention, VisualContrastAttention  # noqa: E402
from gen.models.vca import KERNELS  # noqa: E402

WIDTHS = [(384, 6), (1152, 16)]


def build_step(kind, dim, heads, side, batch, device, dtype, kernels="auto"):
    """A closure running forward and backward once, with inputs and weights already made."""
    torch.manual_seed(0)
    if kind == "mhsa":
        module = Attention(dim, heads)
    else:
        module = VisualContrastAttention(dim, heads, (side, side), kernels=kernels)
    module = module.to(device)
    forward = module.reference_forward if kind == "vca-reference" else module.forward
    x = torch.randn(batch, side * side, dim, device=device, requires_grad=True)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = forward(x)
        out.float().sum().backward()

    return step


def row_keys(args) -> list[tuple[str, str]]:
    """(attention, VCA kernels) of each row of one width and grid, MHSA first: the ratios' baseline."""
    keys = [("mhsa", "-"), *(("vca", kernels) for kernels in args.vca_kernels)]
    return keys if args.skip_reference else [*keys, ("vca-reference", "-")]


def measure(dim, heads, side, batch, device, dtype, args) -> dict:
    """{(attention, kernels): (seconds, time / MHSA, peak bytes) or why it failed}, timed interleaved."""
    steps, results = {}, {}
    for kind, kernels in row_keys(args):  # each built and run once: a failing one is reported, the rest timed
        try:
            step = build_step(kind, dim, heads, side, batch, device, dtype, kernels if kind == "vca" else "auto")
            step()
            steps[kind, kernels] = step
        except Exception as error:
            if is_out_of_memory(error):
                raise
            results[kind, kernels] = one_line(error)
    times = paired_seconds(steps, device, warmup=1, rounds=args.repeats)
    baseline = times.get(("mhsa", "-"))
    for key, step in steps.items():
        ratio = median_ratio(times[key], baseline) if baseline else None
        results[key] = (statistics.median(times[key]), ratio, peak_memory_bytes(step, device))
    return results


def grid_rows(table, dim, heads, side, batch, device, dtype, args):
    """Measure one width and grid and print its rows; a failure is said in its rows and the run goes on."""
    batch, results, note = measure_rows(lambda size: measure(dim, heads, side, size, device, dtype, args),
                                        row_keys(args), batch, device)
    baseline = results["mhsa", "-"]
    for kind, kernels in row_keys(args):
        known = [f"C={dim}/h={heads}", f"{side}x{side} (N={side**2})", batch, kind, kernels]
        result = results[kind, kernels]
        if isinstance(result, str):
            table.failed(known, "; ".join(filter(None, [result, note])))
            continue
        seconds, ratio, memory = result
        memory_ratio = f"{memory / max(baseline[2], 1):.2f}" if not isinstance(baseline, str) else "-"
        table.row([*known, f"{seconds * 1e3:.1f}", f"{ratio:.2f}" if ratio else "-", f"{memory / 2**20:.0f}",
                   memory_ratio, note])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--tokens-per-batch", type=int, default=None,
                        help="batch = this / N (default 4096 on the CPU, 65536 on a GPU)")
    parser.add_argument("--skip-reference", action="store_true", help="leave out VCA's slow reference path")
    parser.add_argument("--vca-kernels", nargs="+", choices=KERNELS, default=["auto"],
                        help="a VCA row for each kernel choice")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokens = args.tokens_per_batch or (65536 if device.type == "cuda" else 4096)
    print(f"device: {device_name(device)}; dtype {str(dtype).split('.')[-1]}; torch {torch.__version__}; "
          f"{datetime.date.today()}; {args.repeats} paired rounds", flush=True)
    table = StreamTable("Attention module, forward + backward", ["width", "grid", "batch", "attention", "VCA kernels",
                        "ms", "time / MHSA", "peak MiB", "memory / MHSA", "note"],
                        {"width": 11, "grid": 16, "attention": 13})
    for dim, heads in WIDTHS:
        for side in args.sides:
            grid_rows(table, dim, heads, side, max(1, tokens // side**2), device, dtype, args)

if __name__ == "__main__":
    main()
