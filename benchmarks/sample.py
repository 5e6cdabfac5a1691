"""Images/s of sampling (DiT DDPM with guidance; SiT ODE) for MHSA and VCA models, and of FID features.

    python benchmarks/sample.py                       # DiT-S/2 and SiT-S/2 at 256 px, MHSA vs VCA, 1 and 2 threads
    python benchmarks/sample.py --image-size 512 --num-steps 5 --ode-steps 2 --no-inception   # the 512 px goal
    python benchmarks/sample.py --model-size XL --num-steps 250 --batch-size 64   # on a GPU

The networks hold DiT's initialisation with their weights perturbed (speed does not depend on training).
Latents only: the VAE decode is the same for every model and is left out. Ratios are against the MHSA model
of the same family measured in the same run: the two samplers run interleaved (A, B, A, B, ...) and the
ratio is the median of the per-round ratios. On the CPU the step counts default to a tenth of the paper's
(25 DDPM steps, 5 Heun steps); images/s scale as 1 / steps. Each row is printed as it is measured; a pair
that fails says why in its rows (on out-of-memory the batch is halved first) and the run goes on.
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
from bench_common import StreamTable, device_name, measure_rows, median_ratio, one_line, paired_seconds  # noqa: E402

from gen.family import make_sampler  # noqa: E402
from gen.models import create_model  # noqa: E402
from gen.sampling import generate_latents  # noqa: E402


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


def measure_family(base, sample_fn, batch, args, device, dtype) -> dict:
    """{name: (seconds per batch, images/s against MHSA)} of the MHSA model and its VCA twin, interleaved."""
    args = argparse.Namespace(**{**vars(args), "batch_size": batch})
    runs = {name: build_sampling(name, sample_fn, args, device, dtype) for name in (base, f"{base}-VCA")}
    times = paired_seconds(runs, device, warmup=1, rounds=args.rounds)
    return {name: (statistics.median(times[name]), median_ratio(times[base], times[name])) for name in runs}


def family_rows(table, family, sample_fn, description, args, device, dtype):
    """Time one family's pair and print its rows; a failure is said in its rows and the run goes on."""
    base = f"{family}-{args.model_size}/2"
    batch, results, note = measure_rows(lambda size: measure_family(base, sample_fn, size, args, device, dtype),
                                        [base, f"{base}-VCA"], args.batch_size, device)
    for name, result in results.items():
        if isinstance(result, str):
            table.failed([name, description, batch], "; ".join(filter(None, [result, note])))
        else:
            table.row([name, description, batch, f"{batch / result[0]:.3f}", f"{result[1]:.3f}", note])


def inception_row(table, args, device):
    description = "256 px uint8 -> 299"
    try:  # imported here: without torch-fidelity only this row fails
        from fid_features import measure  # noqa: PLC0415

        from fid.features import InceptionFeatures  # noqa: PLC0415
        from fid.random_weights import save_random_inception_weights  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as folder:
            weights = save_random_inception_weights(os.path.join(folder, "inception.pth"))
            extractor = InceptionFeatures(weights, device=device)
            images = np.random.default_rng(0).integers(0, 256, (8 * args.batch_size, 256, 256, 3), dtype=np.uint8)
            seconds = measure(extractor, images, args.batch_size)
        table.row(["Inception (FID features)", description, args.batch_size, f"{len(images) / seconds:.2f}", "-", ""])
    except Exception as error:
        table.failed(["Inception (FID features)", description, args.batch_size], one_line(error))


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
              f"{datetime.date.today()}; cfg {args.cfg_scale}; {args.rounds} paired rounds", flush=True)
        table = StreamTable(f"Sampling at {args.image_size} px (latents)" + ("" if on_gpu else f", {threads} threads"),
                            ["model", "sampler", "batch", "images/s", "vs MHSA", "note"],
                            {"model": 24, "sampler": 19})
        for family, (sample_fn, description) in samplers.items():
            family_rows(table, family, sample_fn, description, args, device, dtype)
        if args.inception:
            inception_row(table, args, device)


if __name__ == "__main__":
    main()
