"""Is bf16 autocast worth it on this CPU? Its step time against fp32, and its loss curve against fp32's.

    python benchmarks/cpu_bf16.py                 # 1 thread; DiT-S/2(-VCA) at 256 px, curves of DiT-Mini/2(-VCA)

Speed: train_step.py's step in bf16 autocast and in fp32, run interleaved; the ratio is the median of the
per-round ratios. Loss: the Mini twin of each model trained from one seed on fixed smooth latents, in fp32 and in bf16,
with the same timesteps and noise; the noise scale is the gap between two fp32 runs from different seeds.
Training uses it as `--mixed-precision bf16`.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import device_name, median_ratio, paired_seconds, print_table  # noqa: E402
from train_step import build_step  # noqa: E402

from gen.diffusion import create_diffusion  # noqa: E402
from gen.models import create_model  # noqa: E402


def smooth_latents(count: int, size: int) -> torch.Tensor:
    """Low-frequency random fields: data a network can learn in a few dozen steps."""
    coarse = torch.randn(count, 4, size // 4, size // 4, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def loss_curve(name, dtype, seed, steps, data) -> list[float]:
    torch.manual_seed(seed)
    model = create_model(name, input_size=data.shape[-1], num_classes=10).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0)
    diffusion, draws, losses = create_diffusion(""), torch.Generator().manual_seed(1), []
    labels = torch.arange(len(data)) % 10
    for _ in range(steps):
        t = torch.randint(0, diffusion.num_timesteps, (len(data),), generator=draws)
        noise = torch.randn(data.shape, generator=draws)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = diffusion.training_losses(model, data, t, dict(y=labels), noise=noise)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def tail_mean(losses, last=10) -> float:
    return sum(losses[-last:]) / last


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="training steps of each loss curve")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"device: {device_name(cpu)}; torch {torch.__version__}; capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    data = smooth_latents(8, 16)
    rows = []
    for name in ("DiT-S/2", "DiT-S/2-VCA"):
        steps = {dtype: build_step(name, 32, 4, cpu, dtype, False) for dtype in (torch.float32, torch.bfloat16)}
        times = paired_seconds(steps, cpu, rounds=args.rounds)
        mini = name.replace("-S/", "-Mini/")
        fp32, bf16 = (loss_curve(mini, dtype, 0, args.steps, data) for dtype in (torch.float32, torch.bfloat16))
        other_seed = loss_curve(mini, torch.float32, 1, args.steps, data)
        rows.append([name, f"{median_ratio(times[torch.bfloat16], times[torch.float32]):.2f}",
                     f"{fp32[0]:.4f} -> {tail_mean(fp32):.4f}", f"{tail_mean(bf16):.4f}",
                     f"{abs(tail_mean(bf16) - tail_mean(fp32)):.4f}",
                     f"{abs(tail_mean(other_seed) - tail_mean(fp32)):.4f}"])
    print_table(f"bf16 autocast on the CPU, {args.threads} threads (step at 256 px; loss of the Mini twin over "
                f"the last 10 of {args.steps} steps at 128 px)",
                ["model", "step time bf16 / fp32", "fp32 loss", "bf16 loss", "gap bf16 to fp32",
                 "gap fp32 seed 1 to seed 0"], rows)


if __name__ == "__main__":
    main()
