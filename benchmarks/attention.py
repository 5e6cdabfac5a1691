"""Forward+backward time and peak memory of one attention module: VCA (fast and reference) against MHSA.

    python benchmarks/attention.py                 # fp32 on the CPU, bf16 on a GPU
    python benchmarks/attention.py --sides 16 32   # a subset of grids

Square grids of side 16, 32, 64 (N = 256, 1024, 4096) at C = 384 / 6 heads and C = 1152 / 16 heads,
projections included. The batch holds about the same number of tokens at every N. Ratios are against MHSA
(scaled_dot_product_attention; flash attention on a GPU) measured in the same run.
"""
import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_name, median_seconds, peak_memory_bytes, print_table  # noqa: E402

from gen.models import Attention, VisualContrastAttention  # noqa: E402

WIDTHS = [(384, 6), (1152, 16)]
KINDS = ("mhsa", "vca", "vca-reference")


def build_step(kind, dim, heads, side, batch, device, dtype):
    """A closure running forward and backward once, with inputs and weights already made."""
    torch.manual_seed(0)
    if kind == "mhsa":
        module = Attention(dim, heads)
    else:
        module = VisualContrastAttention(dim, heads, (side, side))
    module = module.to(device)
    forward = module.reference_forward if kind == "vca-reference" else module.forward
    x = torch.randn(batch, side * side, dim, device=device, requires_grad=True)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = forward(x)
        out.float().sum().backward()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--tokens-per-batch", type=int, default=None,
                        help="batch = this / N (default 4096 on the CPU, 65536 on a GPU)")
    parser.add_argument("--skip-reference", action="store_true", help="leave out VCA's slow reference path")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokens = args.tokens_per_batch or (65536 if device.type == "cuda" else 4096)
    kinds = [k for k in KINDS if not (args.skip_reference and k == "vca-reference")]
    print(f"device: {device_name(device)}; dtype {str(dtype).split('.')[-1]}; torch {torch.__version__}; "
          f"{datetime.date.today()}")

    rows = []
    for dim, heads in WIDTHS:
        for side in args.sides:
            batch = max(1, tokens // side**2)
            measured = {}
            for kind in kinds:
                step = build_step(kind, dim, heads, side, batch, device, dtype)
                seconds = median_seconds(step, device, repeats=args.repeats)
                measured[kind] = (seconds, peak_memory_bytes(step, device))
            base_time, base_memory = measured["mhsa"]
            for kind in kinds:
                seconds, memory = measured[kind]
                rows.append([f"C={dim}/h={heads}", f"{side}x{side} (N={side**2})", batch, kind,
                             f"{seconds * 1e3:.1f}", f"{seconds / base_time:.2f}",
                             f"{memory / 2**20:.0f}", f"{memory / max(base_memory, 1):.2f}"])
    print_table("Attention module, forward + backward", ["width", "grid", "batch", "attention", "ms",
                "time / MHSA", "peak MiB", "memory / MHSA"], rows)


if __name__ == "__main__":
    main()
