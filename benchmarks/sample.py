"""Images/s of sampling (DiT DDPM with guidance; SiT ODE) for MHSA and VCA models, and of FID features.

    python benchmarks/sample.py                       # DiT-S/2 and SiT-S/2 at 256 px, MHSA vs VCA, 1 and 2 threads
    python benchmarks/sample.py --image-size 512 --num-steps 5 --ode-steps 2 --no-inception   # the 512 px goal
    python benchmarks/sample.py --model-size XL --num-steps 250 --batch-size 64   # on a GPU

The networks hold DiT's initialisation with their weights perturbed (speed does not depend on training).
Latents only: the VAE decode is the same for every model and is left out. Ratios are against the MHSA model
of the same family measured in the same run: the two samplers run interleaved (A, B, A, B, ...) and the
ratio is the median of the per-round ratios. On the CPU the step counts default to a tenth of the paper's
(25 DDPM steps, 5 Heun steps); images/s scale as 1 / steps.
"""
import argparse
import datetime
import os
import statistics
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_name, median_ratio, paired_seconds, print_table  # noqa: E402
from fid_features import measure  # noqa: E402

from fid.features import InceptionFeatures  # noqa: E402
from fid.random_weights import save_random_inception_weights  # noqa: E402
from gen.models import create_model  # noqa: E402
from gen.sampling import generate_latents, make_sampler  # noqa: E402


def perturbed(model):
    """Nonzero outputs everywhere, so the samplers do the work they do on a trained model."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def build_sampling(name, sample_fn, args, device, dtype):
    """A closure that samples one batch of latents with the model `name`."""
    torch.manual_seed(0)
    model = perturbed(create_model(name, input_size=args.image_size // 8)).to(device).eval()
    noise = torch.randn(args.batch_size, 4, args.image_size // 8, args.image_size // 8, device=device)
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)

    def run():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            generate_latents(model, labels, noise, sample_fn, args.cfg_scale)

    return run


def sampling_rows(samplers, args, device, dtype):
    rows = []
    for family, (sample_fn, description) in samplers.items():
        base = f"{family}-{args.model_size}/2"
        runs = {name: build_sampling(name, sample_fn, args, device, dtype) for name in (base, f"{base}-VCA")}
        times = paired_seconds(runs, device, warmup=1, rounds=args.rounds)
        for name in runs:
            speedup = median_ratio(times[base], times[name])  # images/s against MHSA = its time over ours
            rows.append([name, description, f"{args.batch_size / statistics.median(times[name]):.3f}",
                         f"{speedup:.3f}"])
    return rows


def inception_row(args, device):
    with tempfile.TemporaryDirectory() as folder:
        weights = save_random_inception_weights(os.path.join(folder, "inception.pth"))
        extractor = InceptionFeatures(weights, device=device)
        images = np.random.default_rng(0).integers(0, 256, (8 * args.batch_size, 256, 256, 3), dtype=np.uint8)
        seconds = measure(extractor, images, args.batch_size)
    return ["Inception (FID features)", "256 px uint8 -> 299", f"{len(images) / seconds:.2f}", "-"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", default="S", choices=["S", "B", "L", "XL", "Mini"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 on a GPU, 4 on the CPU")
    parser.add_argument("--num-steps", type=int, default=None, help="DDPM steps (default 250 GPU, 25 CPU)")
    parser.add_argument("--ode-steps", type=int, default=None, help="SiT Heun steps (default 50 GPU, 5 CPU)")
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU threads, each in turn")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--no-inception", dest="inception", action="store_false", help="skip the FID features")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    args.batch_size = args.batch_size or (64 if on_gpu else 4)
    ddpm_steps = args.num_steps or (250 if on_gpu else 25)
    ode_steps = args.ode_steps or (50 if on_gpu else 5)
    samplers = {
        "DiT": (make_sampler("DiT", "ddpm", ddpm_steps), f"DDPM {ddpm_steps} steps"),
        "SiT": (make_sampler("SiT", "ODE", ode_steps, sampling_method="heun2"), f"ODE Heun {ode_steps} steps"),
    }
    for threads in args.threads if not on_gpu else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        print(f"device: {device_name(device)}; dtype {str(dtype).split('.')[-1]}; torch {torch.__version__}; "
              f"{datetime.date.today()}; batch {args.batch_size}; cfg {args.cfg_scale}; {args.rounds} paired rounds")
        rows = sampling_rows(samplers, args, device, dtype)
        if args.inception:
            rows.append(inception_row(args, device))
        print_table(f"Sampling at {args.image_size} px (latents), {threads} threads",
                    ["model", "sampler", "images/s", "vs MHSA"], rows)


if __name__ == "__main__":
    main()
