"""One guided sampling step (the network on the batch doubled for classifier-free guidance, as sample.py runs
it) per model, VCA kernels and compile mode, each VCA row against its MHSA twin's in the same run.

    PYTHONPATH=. python3 benchmarks/sampling_step.py          # on a GPU: DiT-S/2 and its VCA twin, 256 px, bf16
    .venv/bin/python benchmarks/sampling_step.py --models DiT-Mini/2 --image-size 64 --batch-size 2 --modes eager

Modes: eager, compiled (torch.compile of forward, as `sample.py --compile`) and cuda-graphs (compiled with
mode="reduce-overhead"; GPU only). "first call" is the first step's seconds: the compile time. On a GPU the
eager rows also give kernel milliseconds per step by group (benchmarks/profile_step.py's groups), largest
first. Precision: bf16 autocast on a GPU, float32 on the CPU (--precision to choose).
"""
import argparse
import datetime
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import StreamTable, device_name, median_seconds, one_line, release, synchronize  # noqa: E402
from profile_step import model_name, profile_groups  # noqa: E402

from gen.models import create_model, set_vca_kernels  # noqa: E402
from gen.models.vca import KERNELS  # noqa: E402
from gen.sampling import guided  # noqa: E402

COMPILE_MODES = {"eager": None, "compiled": "default", "cuda-graphs": "reduce-overhead"}


def guided_step(name, kernels, mode, batch, latent_side, device, precision):
    """A fresh model's guided step at guidance 1.5 (call it to run one step)."""
    torch.manual_seed(0)
    model = create_model(name, input_size=latent_side).to(device).eval()
    if kernels != "-":
        set_vca_kernels(model, kernels)
    if mode != "eager":
        model.forward = torch.compile(model.forward, mode=COMPILE_MODES[mode])
    x = torch.randn(batch, model.config.in_channels, latent_side, latent_side, device=device)
    t = torch.full((batch,), 500, device=device)
    labels = torch.randint(0, model.config.num_classes, (batch,), device=device)
    model_fn = guided(model, labels, 1.5, precision=precision)

    @torch.no_grad()
    def step():
        model_fn(x, t)

    return step


def measure(name, kernels, mode, args, device):
    """(seconds per step, seconds of the first call, kernel groups or {})."""
    step = guided_step(name, kernels, mode, args.batch_size, args.image_size // 8, device, args.precision)
    start = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - start
    seconds = median_seconds(step, device, warmup=2, repeats=args.repeats)
    groups = profile_groups(step, device, 3) if device.type == "cuda" and mode == "eager" else {}
    return seconds, first, groups


def rows_of(name, args):
    kernels = args.vca_kernels if name.endswith("-VCA") else ["-"]
    return [(kernels_choice, mode) for kernels_choice in kernels for mode in args.modes]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=model_name, nargs="+", default=["DiT-S/2"],
                        help="MHSA models; each is measured with its -VCA twin")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (the network sees twice that)")
    parser.add_argument("--modes", nargs="+", choices=list(COMPILE_MODES), default=list(COMPILE_MODES))
    parser.add_argument("--vca-kernels", nargs="+", choices=KERNELS, default=["triton", "torch"])
    parser.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default=None,
                        help="default bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per row (the median is kept)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    if device.type != "cuda":
        args.modes = [mode for mode in args.modes if mode != "cuda-graphs"]
    print(f"device: {device_name(device)}; torch {torch.__version__}; {datetime.date.today()}; "
          f"{args.image_size} px; batch {args.batch_size}; {args.precision}", flush=True)
    table = StreamTable("Guided sampling step (network only)",
                        ["model", "VCA kernels", "mode", "ms/step", "images/s at 50 steps", "step / MHSA",
                         "first call s", "kernel ms per group (GPU, eager)"], {"model": 14, "mode": 11})
    for mhsa in args.models:
        baseline = {}
        for name in (mhsa, f"{mhsa}-VCA"):
            for kernels, mode in rows_of(name, args):
                try:
                    seconds, first, groups = measure(name, kernels, mode, args, device)
                except Exception as error:
                    table.failed([name, kernels, mode], one_line(error))
                    continue
                finally:
                    release(device)
                if name == mhsa:
                    baseline[mode] = seconds
                ratio = f"{seconds / baseline[mode]:.3f}" if mode in baseline else "-"
                largest = sorted(groups.items(), key=lambda item: -item[1][0])[:6]
                table.row([name, kernels, mode, f"{1e3 * seconds:.1f}", f"{args.batch_size / (50 * seconds):.0f}",
                           ratio, f"{first:.1f}", ", ".join(f"{g} {ms:.1f}" for g, (ms, _) in largest) or "-"])


if __name__ == "__main__":
    main()
