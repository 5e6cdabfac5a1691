"""Milliseconds per sampler step of the step noise: the device hash (gen.sampling.StepNoise) against the former
per-image CPU draw (one seeded torch.Generator per image, stacked, copied to the device) and one torch.randn.

    python benchmarks/step_noise.py                        # batch 256 of 4 x 32 x 32 latents (DiT at 256 px)
    python benchmarks/step_noise.py --batch-size 32 --side 64
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import device_name, median_seconds, print_table  # noqa: E402

from gen.sampling import StepNoise  # noqa: E402
from gen.sampling.seeding import image_generator  # noqa: E402


def per_image_cpu_draw(generators, like):
    """What each step cost before: a CPU randn per image, then one copy to the device."""
    rows = [torch.randn(like.shape[1:], generator=g) for g in generators]
    return torch.stack(rows).to(device=like.device, dtype=like.dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    like = torch.empty(args.batch_size, 4, args.side, args.side, device=device)
    generators = [image_generator(0, i) for i in range(args.batch_size)]
    step_noise = StepNoise(0, range(args.batch_size))
    draws = {"per-image CPU generators + copy (before)": lambda: per_image_cpu_draw(generators, like),
             "StepNoise: hash on the device (now)": lambda: step_noise(like),
             "one torch.randn on the device (floor)": lambda: torch.randn_like(like)}
    rows = [[name, f"{1e3 * median_seconds(draw, device, warmup=2, repeats=args.repeats):.3f}"]
            for name, draw in draws.items()]
    print_table(f"Step noise, batch {args.batch_size} x 4 x {args.side} x {args.side}, {device_name(device)}",
                ["draw", "ms per step"], rows)


if __name__ == "__main__":
    main()
