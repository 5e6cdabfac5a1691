"""Where a training step's time goes: milliseconds per op group (torch profiler, self CPU time), per model.

    python benchmarks/profile_step.py                          # DiT-S/2 vs DiT-S/2-VCA at 256 px, 1 thread
    python benchmarks/profile_step.py --image-size 512 --threads 2

The step is train_step.py's. Groups: matrix products, the attention kernels, the depthwise convolution,
copies and concatenations, element-wise and reduction passes (the EMA's two foreach kernels among them),
and AdamW apart. Times are from a loaded or idle machine alike: compare columns of one run.
"""
import argparse
import collections
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_name, print_table  # noqa: E402
from train_step import build_step  # noqa: E402

GROUPS = {  # first match wins
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product",),
    "convolution": ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution"),
    "copies, cat": ("aten::copy_", "aten::cat", "aten::stack", "aten::clone", "aten::contiguous"),
}


def group_of(op_name: str) -> str:
    return next((group for group, prefixes in GROUPS.items() if op_name.startswith(prefixes)), "element-wise")


def ms_per_group(step, repeats: int) -> dict:
    """Self CPU milliseconds per group for one step, averaged over `repeats` profiled steps."""
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    totals = collections.Counter()
    optimizer_ms = sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith("Optimizer.step"))
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            totals[group_of(event.key)] += event.self_cpu_time_total
    totals["element-wise"] -= optimizer_ms  # the optimizer's ops are element-wise; report them apart
    totals["AdamW"] = optimizer_ms
    return {group: microseconds / 1e3 / repeats for group, microseconds in totals.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["DiT-S/2", "DiT-S/2-VCA"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"device: {device_name(cpu)}; torch {torch.__version__}; batch {args.batch_size}; {args.image_size} px")
    measured = {name: ms_per_group(build_step(name, args.image_size // 8, args.batch_size, cpu, torch.float32,
                                              False), args.repeats) for name in args.models}
    groups = [*GROUPS, "element-wise", "AdamW"]
    rows = [[group, *(f"{measured[name].get(group, 0):.0f}" for name in args.models)] for group in groups]
    rows.append(["total", *(f"{sum(measured[name].values()):.0f}" for name in args.models)])
    print_table(f"Self CPU ms per training step by op group, {args.threads} threads", ["op group", *args.models],
                rows)


if __name__ == "__main__":
    main()
