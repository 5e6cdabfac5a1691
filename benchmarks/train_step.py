"""Images/s and peak memory of a full DiT training step: forward, loss, backward, AdamW, EMA.

    python benchmarks/train_step.py                  # DiT-S/2 vs DiT-S/2-VCA at 256 and 512 px
    python benchmarks/train_step.py --with-xl        # adds DiT-XL/2 (and its VCA twin) and MFU, on a GPU

The step is the one gen/training.py runs (ADM diffusion loss with learned sigma, AdamW at lr 1e-4, the
foreach EMA), in bf16 autocast with fused AdamW on a GPU and fp32 on the CPU. Ratios are against the
MHSA model at the same size, measured in the same run. Model FLOP utilisation = 3 x forward FLOPs per
image x images/s over the device's dense bf16 peak (--peak-tflops, known for H100/H200/A100).
"""
import argparse
import datetime
import os
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_name, median_seconds, peak_memory_bytes, print_table  # noqa: E402

from gen.diffusion import create_diffusion  # noqa: E402
from gen.models import create_model  # noqa: E402
from gen.training.ema import create_ema, update_ema  # noqa: E402

DENSE_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def forward_flops_per_image(name: str, input_size: int) -> int:
    """Forward FLOPs of one image, counted on the meta device with attention decomposed into matmuls."""
    with torch.device("meta"):
        model = create_model(name, input_size=input_size)
        x, t, y = torch.randn(1, 4, input_size, input_size), torch.zeros(1, dtype=torch.long), torch.zeros(1).long()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    return counter.get_total_flops()


def build_step(name, input_size, batch, device, dtype, compile_model):
    torch.manual_seed(0)
    model = create_model(name, input_size=input_size).to(device).train()
    ema = create_ema(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0, fused=device.type == "cuda")
    diffusion = create_diffusion("")
    forward = torch.compile(model) if compile_model else model
    x = torch.randn(batch, 4, input_size, input_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        t = torch.randint(0, diffusion.num_timesteps, (batch,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = diffusion.training_losses(forward, x, t, dict(y=y))["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_ema(ema, model)

    return step


def peak_tflops(device, override):
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in DENSE_BF16_TFLOPS.items() if key in name), None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch-size", type=int, default=None, help="per step (default 64 GPU, 4 CPU)")
    parser.add_argument("--with-xl", action="store_true", help="also DiT-XL/2 and DiT-XL/2-VCA")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    batch = args.batch_size or (64 if device.type == "cuda" else 4)
    peak = peak_tflops(device, args.peak_tflops)
    print(f"device: {device_name(device)}; dtype {str(dtype).split('.')[-1]}; torch {torch.__version__}; "
          f"{datetime.date.today()}; batch {batch}; compile {args.compile}")

    sizes = ["S"] + (["XL"] if args.with_xl else [])
    rows = []
    for size in sizes:
        for image_size in args.image_sizes:
            base = f"DiT-{size}/2"
            measured = {}
            for name in (base, f"{base}-VCA"):
                step = build_step(name, image_size // 8, batch, device, dtype, args.compile)
                seconds = median_seconds(step, device, warmup=2 if args.compile else 1, repeats=args.repeats)
                flops = forward_flops_per_image(name, image_size // 8)
                measured[name] = (seconds, peak_memory_bytes(step, device), flops)
            for name, (seconds, memory, flops) in measured.items():
                mfu = f"{100 * 3 * flops * batch / seconds / (peak * 1e12):.1f} %" if peak else "-"
                rows.append([name, image_size, f"{batch / seconds:.2f}", f"{seconds / measured[base][0]:.2f}",
                             f"{memory / 2**20:.0f}", f"{flops / 1e9:.1f}", mfu])
    print_table("Training step (forward, loss, backward, AdamW, EMA)",
                ["model", "px", "images/s", "step time / MHSA", "peak MiB", "fwd GFLOP/img", "MFU"], rows)


if __name__ == "__main__":
    main()
