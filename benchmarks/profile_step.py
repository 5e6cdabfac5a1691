"""Where a training step's time goes, per model: kernel time and launches per kernel group on a GPU, self CPU
time per op group on the CPU (torch profiler).

    python benchmarks/profile_step.py                          # DiT-S/2 vs DiT-S/2-VCA at 256 px, 1 thread
    python benchmarks/profile_step.py --image-size 512 --threads 2
    python benchmarks/profile_step.py --vca-kernels torch triton --trace /tmp/step.json.gz   # on a GPU

The step is train_step.py's (on a GPU in bf16 autocast, with its batch per model and size, halved on
out-of-memory). On a GPU every kernel the step launches (CUDA activity) is put in a group by its name: GEMM,
flash/SDPA attention, Triton (fused) kernels, convolution, pooling, copies, element-wise, reductions and
norms, the optimizer and EMA (multi-tensor kernels), other; each cell is milliseconds per step and, in
brackets, launches per step. "busy" is kernel time over the step's wall time: far below 100 % means the step
waits on launches, not on the GPU. --trace FILE writes a chrome trace per row (FILE with the row's name put
in; .gz compresses). On the CPU the groups are matrix products, the attention kernels, the depthwise
convolution, copies and concatenations, element-wise and reduction passes (the EMA's two foreach kernels
among them), and AdamW apart. One model is resident at a time; each row is printed as it is measured, and
a row that fails says why. Times are from a loaded or idle machine alike: compare rows of one run.
"""
import argparse
import collections
import datetime
import os
import re
import sys

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import StreamTable, device_name, is_out_of_memory, measure_rows, median_seconds, one_line  # noqa: E402
from train_step import build_training, default_batch  # noqa: E402

from gen.models import model_config, set_vca_kernels  # noqa: E402
from gen.models.vca import KERNELS  # noqa: E402

CPU_GROUPS = {  # first match wins
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product",),
    "convolution": ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution"),
    "copies, cat": ("aten::copy_", "aten::cat", "aten::stack", "aten::clone", "aten::contiguous"),
}
# CUDA kernel names (lower case) -> group, first match wins; Triton kernels are plain identifiers, checked
# after the libraries whose kernels are too (cuBLAS "sm90_xmma_gemm_...", cuDNN "..._sdpa_...").
KERNEL_GROUPS = {
    "optimizer, EMA": ("multi_tensor_apply", "adam"),
    "triton (fused)": ("triton_",),
    "flash/SDPA attention": ("flash", "fmha", "sdpa", "attention", "attn"),
    "convolution": ("conv2d", "convolution", "depthwise", "fprop", "dgrad", "wgrad", "implicit_convolve"),
    "GEMM": ("gemm", "gemv", "cutlass", "nvjet", "cublas", "xmma", "splitk"),
    "pooling": ("pool",),
    "copies, cat, transpose": ("memcpy", "memset", "copy", "catarray", "cat_", "transpose", "permute"),
    "reductions, norms": ("reduce", "norm", "softmax", "welford", "moments", "gammabeta"),
    "element-wise": ("elementwise", "vectorized", "unrolled", "gelu", "silu", "tanh", "fill", "pointwise"),
}
PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def cpu_group(op_name: str) -> str:
    return next((group for group, prefixes in CPU_GROUPS.items() if op_name.startswith(prefixes)), "element-wise")


def kernel_group(kernel_name: str) -> str:
    name = kernel_name.lower()
    for group, patterns in KERNEL_GROUPS.items():
        if any(pattern in name for pattern in patterns):
            return group
        if group == "GEMM" and PLAIN_IDENTIFIER.fullmatch(kernel_name):  # a Triton kernel written by hand
            return "triton (fused)"
    return "other"


def kernel_groups(kernels, steps: int) -> dict:
    """{group: (milliseconds, launches)} per step from (kernel name, microseconds) of `steps` steps."""
    totals, launches = collections.Counter(), collections.Counter()
    for name, microseconds in kernels:
        group = kernel_group(name)
        totals[group] += microseconds
        launches[group] += 1
    return {group: (totals[group] / 1e3 / steps, launches[group] / steps) for group in totals}


def cpu_op_groups(prof, steps: int) -> dict:
    """{group: (self CPU milliseconds, None)} per step, AdamW apart from the element-wise ops it runs."""
    totals = collections.Counter()
    optimizer_us = sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith("Optimizer.step"))
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            totals[cpu_group(event.key)] += event.self_cpu_time_total
    totals["element-wise"] -= optimizer_us
    totals["AdamW"] = optimizer_us
    return {group: (microseconds / 1e3 / steps, None) for group, microseconds in totals.items()}


def profile_groups(step, device, steps: int, trace=None) -> dict:
    """Time per group of one step, over `steps` profiled steps: kernel time on a GPU, self CPU time on the CPU."""
    on_gpu = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
        for _ in range(steps):
            step()
        if on_gpu:
            torch.cuda.synchronize(device)
    if trace:
        prof.export_chrome_trace(trace)
    if not on_gpu:
        return cpu_op_groups(prof, steps)
    kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events()
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    return kernel_groups(kernels, steps)


def trace_path(trace, name, kernels):
    """FILE with the row put in before its first suffix: step.json.gz -> step.DiT-S_2-VCA.torch.json.gz."""
    if not trace:
        return None
    folder, base = os.path.split(trace)
    stem, dot, suffix = base.partition(".")
    row = name.replace("/", "_") + ("" if kernels == "-" else f".{kernels}")
    return os.path.join(folder, f"{stem}.{row}{dot}{suffix}")


def profile_model(name, image_size, batch, device, dtype, args) -> dict:
    """{(name, kernels): (step seconds, groups) or why it failed}: one model, profiled per kernel choice."""
    model, step = build_training(name, image_size // 8, batch, device, dtype)
    results = {}
    for key in row_keys(name, args):
        try:
            if key[1] != "-":
                set_vca_kernels(model, key[1])
            seconds = median_seconds(step, device, warmup=1, repeats=args.repeats)  # warms up the profile too
            results[key] = (seconds, profile_groups(step, device, args.repeats, trace_path(args.trace, *key)))
        except Exception as error:
            if is_out_of_memory(error):
                raise
            results[key] = one_line(error)
    return results


def row_keys(name, args):
    return [(name, kernels) for kernels in args.vca_kernels] if name.endswith("-VCA") else [(name, "-")]


def model_name(name: str) -> str:
    try:
        model_config(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=model_name, nargs="+", default=["DiT-S/2", "DiT-S/2-VCA"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="default 4 on the CPU, train_step.py's on a GPU")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="profiled steps (and timed steps) per row")
    parser.add_argument("--vca-kernels", nargs="+", choices=KERNELS, default=["auto"],
                        help="a row of each VCA model per kernel choice")
    parser.add_argument("--trace", metavar="FILE", help="write a chrome trace per row (FILE.gz: compressed)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(args.threads)
    print(f"device: {device_name(device)}; dtype {str(dtype).split('.')[-1]}; torch {torch.__version__}; "
          f"{datetime.date.today()}; {args.image_size} px; {args.repeats} profiled steps", flush=True)
    if args.trace:
        os.makedirs(os.path.dirname(os.path.abspath(args.trace)), exist_ok=True)
    groups = [*KERNEL_GROUPS, "other"] if on_gpu else [*CPU_GROUPS, "element-wise", "AdamW"]
    totals = ["kernel ms", "busy", "launches"] if on_gpu else ["self CPU ms"]
    unit = "kernel ms (launches) per step" if on_gpu else f"self CPU ms per step, {args.threads} threads"
    table = StreamTable(f"Training step by {'kernel' if on_gpu else 'op'} group: {unit}",
                        ["model", "VCA kernels", "batch", "step ms", *totals, *groups, "note"], {"model": 14})
    for name in args.models:
        model_rows(table, name, groups, device, dtype, args)


def model_rows(table, name, groups, device, dtype, args):
    """Profile one model (once per VCA kernel choice) and print its rows; a failure is said in its rows."""
    on_gpu = device.type == "cuda"
    batch = args.batch_size or default_batch(name, args.image_size, device)
    batch, results, note = measure_rows(lambda size: profile_model(name, args.image_size, size, device, dtype, args),
                                        row_keys(name, args), batch, device)
    for key in row_keys(name, args):
        if isinstance(results[key], str):
            table.failed([*key, batch], "; ".join(filter(None, [results[key], note])))
            continue
        seconds, measured = results[key]
        total_ms = sum(ms for ms, _ in measured.values())
        cells = [f"{measured.get(g, (0, 0))[0]:.1f}" + (f" ({measured.get(g, (0, 0))[1]:.0f})" if on_gpu else "")
                 for g in groups]
        summary = [f"{total_ms:.1f}"]
        if on_gpu:
            summary += [f"{100 * total_ms / (1e3 * seconds):.0f} %", f"{sum(n for _, n in measured.values()):.0f}"]
        table.row([*key, batch, f"{1e3 * seconds:.1f}", *summary, *cells, note])


if __name__ == "__main__":
    main()
