"""Registers, spills and vector loads of VCA's Triton kernels, compiled for an H100 (sm_90) without a GPU.

    python benchmarks/kernel_resources.py            # DiT-S (C=384, 6 heads) and DiT-XL (C=1152, 16 heads), 256 px
    python benchmarks/kernel_resources.py --side 32  # 512 px

One forward and backward of a VCA module runs on the CPU with its Triton launches recorded instead of run; each
launch (the wrapper's own grid, strides, block sizes and warps) is then compiled by Triton for sm_90, and the
bundled ptxas and cuobjdump say what the GPU would get: registers per thread (255 is the ceiling), bytes
spilled to local memory (should be 0), and global loads by width (16-byte vectors vs single elements).
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

import torch

os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not interpreted ones, before Triton is imported
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import triton  # noqa: E402
from bench_common import print_table  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from gen.models import VisualContrastAttention, vca_fused  # noqa: E402

TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class RecordingKernels:
    """Stands in for gen.models.vca_kernels: `kernel[grid](*args, **meta)` is recorded, not run."""

    def __init__(self, module):
        self.module, self.launches = module, []

    def __getattr__(self, name):
        kernel, launches = getattr(self.module, name), self.launches

        class Launch:
            def __getitem__(self, grid):
                return lambda *args, **meta: launches.append((kernel, grid, args, meta))

        return Launch()


def compile_for_sm90(kernel, args, meta):
    """Triton's compile of one recorded launch, specialised as a launch would be (16-divisible ints and
    pointers, ints of 1 as constants)."""
    meta = dict(meta)
    warps = meta.pop("num_warps", 4)
    names = [p.name for p in kernel.params]
    signature, constants, attributes = {}, {}, {}
    for index, name in enumerate(names):
        value = meta[name] if name in meta else args[index]
        if name in meta or isinstance(value, bool) or (isinstance(value, int) and value == 1) or \
                kernel.params[index].is_constexpr:
            signature[name], constants[(index,)] = "constexpr", value
        elif torch.is_tensor(value):
            signature[name] = "*" + TRITON_TYPES[value.dtype]
            attributes[(index,)] = [["tt.divisibility", 16]]  # the caching allocator aligns to 512 bytes
        elif isinstance(value, int):
            signature[name] = "i32" if abs(value) < 2**31 else "i64"
            if value % 16 == 0:
                attributes[(index,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "fp32"
    source = ASTSource(kernel, signature, constants, attributes)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps}), warps


def resources(compiled) -> tuple[str, str, str]:
    """(registers, spilled bytes, loads as 16-byte / 8-byte / single) from the cubin and the PTX."""
    tools = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin"))[0]
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "--dump-resource-usage", cubin.name],
                               capture_output=True, text=True).stdout
    registers = re.search(r"REG:(\d+)", usage)
    local = re.search(r"LOCAL:(\d+)", usage)
    ptx = compiled.asm["ptx"]
    wide = len(re.findall(r"ld\.global[.\w]*\.v4\.b", ptx))
    pairs = len(re.findall(r"ld\.global[.\w]*\.v2\.b", ptx))
    single = len(re.findall(r"ld\.global(?![.\w]*\.v[24])[.\w]*\s", ptx))
    return (registers.group(1) if registers else "?", local.group(1) if local else "?", f"{wide} / {pairs} / {single}")


def record(dim, heads, side, batch, dtype, kernels):
    """The launches of one forward and backward of VCA's fused path (`kernels`) under `dtype` autocast."""
    torch.manual_seed(0)
    vca = VisualContrastAttention(dim, heads, (side, side), kernels=kernels)
    x = torch.randn(batch, side * side, dim, requires_grad=True)
    recording = RecordingKernels(vca_fused._kernels())
    saved, vca_fused._KERNELS = vca_fused._KERNELS, recording
    try:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = vca(x)
        out.float().sum().backward()
    finally:
        vca_fused._KERNELS = saved
    return recording.launches


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=16, help="token grid side (16: 256 px with /2 patches)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--batch-size", type=int, default=64, help="sets the grids (and the programs per SM)")
    parser.add_argument("--kernels", nargs="+", choices=["triton", "triton-core"], default=["triton", "triton-core"],
                        help="the fused paths whose kernels are compiled (triton-core: the one-kernel core)")
    args = parser.parse_args(argv)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    rows = []
    seen = set()
    for kernels in args.kernels:
        for label, dim, heads in (("DiT-S", 384, 6), ("DiT-XL", 1152, 16)):
            for kernel, grid, launch_args, meta in record(dim, heads, args.side, args.batch_size, dtype, kernels):
                if (label, kernel.__name__) in seen:  # the epilogue after the core is triton's too
                    continue
                seen.add((label, kernel.__name__))
                compiled, warps = compile_for_sm90(kernel, launch_args, meta)
                blocks = ", ".join(f"{k}={v}" for k, v in meta.items() if k.startswith(("BLOCK", "TOKENS")))
                rows.append([label, kernel.__name__, f"{tuple(grid)}", blocks, warps, *resources(compiled)])
    print(f"sm_90 (H100/H200), Triton {triton.__version__}, {args.side}x{args.side} grid, {args.dtype}, "
          f"batch {args.batch_size}")
    print_table("VCA's Triton kernels as compiled for sm_90", ["model", "kernel", "grid", "blocks", "warps",
                "registers", "spilled bytes", "loads 16B / 8B / 1 elem"], rows)


if __name__ == "__main__":
    main()
