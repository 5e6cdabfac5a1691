"""Kernel launches and passes over the activations of one attention module, forward and backward, counted on the CPU.

    python benchmarks/launch_count.py                   # MHSA, VCA's torch path, VCA's fused (Triton) path
    python benchmarks/launch_count.py --dim 1152 --heads 16

What a GPU would run, counted where no GPU is: every aten op that does work (views and allocations left out)
under bf16 autocast, as the torch profiler records it, plus every Triton launch of VCA's fused path (run
through Triton's interpreter here; each counts as a pass). A "pass" is a launch that reads a tensor of at
least half the activations' size (B x N x C): its cost grows with the image, while the other launches are
small, fixed costs. "saved" is the memory autograd keeps from the forward for the backward, each storage
counted once (q, k and v are views of one qkv output): what sets a step's peak memory. Attention and
convolution count as one launch each (their insides differ by device); the
CPU splits a few ops where CUDA does not (a reduction's zero fill), alike for every module. Per attention
module; a DiT block adds the same MLP and modulation to each.
"""
import argparse
import collections
import contextlib
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # read when Triton is first imported; a no-op with a GPU below

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import print_table  # noqa: E402

from gen.models import Attention, VisualContrastAttention, vca_fused  # noqa: E402

NO_KERNEL = {  # ops that only make views, allocate, or dispatch to the ops below them
    "aten::view", "aten::_unsafe_view", "aten::transpose", "aten::t", "aten::permute", "aten::expand",
    "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::split", "aten::split_with_sizes",
    "aten::unbind", "aten::chunk", "aten::as_strided", "aten::alias", "aten::detach", "aten::empty",
    "aten::empty_like", "aten::new_empty", "aten::empty_strided", "aten::new_empty_strided", "aten::reshape",
    "aten::_reshape_alias", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::result_type",
    "aten::view_as", "aten::contiguous", "aten::to", "aten::_to_copy", "aten::flatten", "aten::unflatten",
    "aten::set_", "aten::is_same_size", "aten::_has_compatible_shallow_copy_type", "aten::zeros_like",
    "aten::ones_like", "aten::numpy_T", "aten::matrix_H", "aten::narrow", "aten::promote_types", "aten::resize_",
    "aten::type_as",
}


# Ops whose insides differ by device: one launch each (on CUDA, flash attention's backward is 2-3 kernels).
OPAQUE = ("aten::_scaled_dot_product", "aten::_efficient_attention", "aten::_flash_attention",
          "aten::convolution_backward", "aten::mkldnn_convolution", "aten::_convolution", "aten::convolution")
TRITON = "triton::"


class CountingKernels:
    """Stands in for gen.models.vca_kernels: each `kernel[grid](...)` runs inside a profiler range of its name."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        kernel = getattr(self.module, name)

        class Launch:
            def __getitem__(self, grid):
                def launch(*args, **meta):
                    with torch.profiler.record_function(TRITON + name):
                        return kernel[grid](*args, **meta)
                return launch

        return Launch()


def _inside(event, prefixes) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(prefixes):
            return True
        parent = parent.cpu_parent
    return False


def _counts_as_launch(event) -> bool:
    if event.name.startswith(TRITON):
        return True
    if not event.name.startswith("aten::") or event.name in NO_KERNEL or _inside(event, OPAQUE + (TRITON,)):
        return False
    return event.name.startswith(OPAQUE) or not any(
        child.name.startswith("aten::") and child.name not in NO_KERNEL for child in event.cpu_children)


def launches(prof, threshold):
    """(name, touches >= threshold elements) for every launch: Triton ranges, opaque ops, leaf aten ops."""
    found = []
    for event in prof.events():
        if not _counts_as_launch(event):
            continue
        sizes = [torch.Size(s).numel() for s in (event.input_shapes or [])
                 if isinstance(s, list) and all(isinstance(i, int) for i in s)]
        found.append((event.name, event.name.startswith(TRITON) or any(size >= threshold for size in sizes)))
    return found


def count(module, x):
    """{"forward"|"backward": [(name, big)], "saved": bytes} for one forward and backward of `module` under bf16
    autocast; "saved" is what autograd keeps between them (each storage once: views of qkv share one)."""
    threshold, storages = x.numel() // 2, {}

    def keep(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as forward:
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            out = module(x)
    grad = torch.randn_like(out)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as backward:
        out.backward(grad)
    return {"forward": launches(forward, threshold), "backward": launches(backward, threshold),
            "saved": sum(storages.values())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--side", type=int, default=16, help="token grid side (16: 256 px with /2 patches)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--ops", action="store_true", help="also list the launches by op name")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, args.side**2, args.dim, requires_grad=True)
    kernels = vca_fused._kernels()
    vca_fused._KERNELS = CountingKernels(kernels)
    try:
        rows, names = count_modules(args, x)
    finally:
        vca_fused._KERNELS = kernels
    print(f"C={args.dim}, {args.heads} heads, {args.side}x{args.side} grid, bf16 autocast; torch {torch.__version__}")
    print_table("Per attention module: launches, passes (those touching >= half the activations), activations "
                "saved for the backward", ["module", "fwd launches", "fwd passes", "bwd launches", "bwd passes",
                                            "launches", "passes", "saved MiB"], rows)
    if args.ops:
        for label, counter in names.items():
            print(f"\n{label}: " + ", ".join(f"{name} x{n}" for name, n in sorted(counter.items())))


def count_modules(args, x):
    """Table rows and launches by name for MHSA and VCA's three paths."""
    grid = (args.side, args.side)
    modules = {
        "MHSA": Attention(args.dim, args.heads),
        "VCA, torch path": VisualContrastAttention(args.dim, args.heads, grid, kernels="torch"),
        "VCA, fused path": VisualContrastAttention(args.dim, args.heads, grid, kernels="triton"),
        "VCA, one-kernel core": VisualContrastAttention(args.dim, args.heads, grid, kernels="triton-core"),
    }
    rows, names = [], collections.defaultdict(collections.Counter)
    for label, module in modules.items():
        counted = count(module, x)
        row = [label]
        for phase in ("forward", "backward"):
            row += [len(counted[phase]), sum(big for _, big in counted[phase])]
            names[label].update(f"{phase} {name}" for name, _ in counted[phase])
        rows.append(row + [row[1] + row[3], row[2] + row[4], f"{counted['saved'] / 2**20:.1f}"])
    return rows, names


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
