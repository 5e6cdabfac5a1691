"""Which --precision to sample in: each setting's FID beside float32's, seed by seed, with images/s.

    python benchmarks/precision_fid.py                        # results/demo/model.safetensors (make demo)
    python benchmarks/precision_fid.py --ckpt model.safetensors --num-samples 1000 --seeds 0 1 2 3

A model of the built-in digits (10 classes, 16 px) is scored with the digits FID network (fid.digits),
which needs nothing downloaded. Every seed draws other images (gen.sampling's per-image randomness), so the
spread of float32's FID over the seeds is the noise floor a precision must stay within: the table gives
each setting's mean FID, its difference from float32's (paired: the same seeds, the same starting noise) and
float32's seed-to-seed standard deviation. The default of gen/sampling/precision.py is the fastest setting
whose difference stays below that spread on the CPU and the GPU (docs/sampling.md, "Precision").
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
from bench_common import StreamTable, device_name, synchronize  # noqa: E402

from gen.family import make_sampler  # noqa: E402
from gen.sampling import PRECISIONS, samples_in_memory  # noqa: E402
from gen.weights.export import load_pretrained, read_settings  # noqa: E402


def sampler_of(settings: dict, family: str):
    """The sampler and guidance the weights file records (what `sample.py --ckpt FILE` uses)."""
    recorded = dict(settings.get("sampler") or {})
    steps, cfg_scale = recorded.pop("num_sampling_steps", 250), recorded.pop("cfg_scale", 1.5)
    name = recorded.pop("sampler" if family == "DiT" else "mode", None)
    options = {k: v for k, v in recorded.items() if k in ("ddim_eta", "sampling_method", "atol", "rtol", "reverse",
                                                           "diffusion_form", "diffusion_norm", "last_step",
                                                           "last_step_size")}
    return make_sampler(family, name, steps, **options, **(settings.get("process") or {})), cfg_scale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="results/demo/model.safetensors", help="a digits model (make demo)")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if not os.path.exists(args.ckpt):
        sys.exit(f"precision_fid.py: {args.ckpt} not found; train the digits demo first (make demo) or pass --ckpt")
    device = torch.device(args.device)
    model = load_pretrained(args.ckpt, device)
    if model.config.num_classes != 10 or read_settings(args.ckpt).get("vae") != "none":
        sys.exit(f"precision_fid.py: {args.ckpt} is not a pixel-space digits model (10 classes, --vae none)")
    sample_fn, cfg_scale = sampler_of(read_settings(args.ckpt), model.config.family)
    from fid.digits import DigitsFeatures, real_digits_reference  # noqa: PLC0415
    from fid.pipeline import compute_metrics  # noqa: PLC0415

    extractor, side = DigitsFeatures(), model.config.input_size
    reference = real_digits_reference(side)
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.ckpt}; {args.num_samples} samples "
          f"per seed, guidance {cfg_scale}\n")
    table = StreamTable("Digits FID per sampling precision", ["precision", "seed", "digits FID", "images/s"])
    fids = {precision: [] for precision in args.precisions}
    rates = {precision: [] for precision in args.precisions}
    for seed in args.seeds:  # precisions interleaved per seed: a slow spell of the machine hits them all
        for precision in args.precisions:
            synchronize(device)
            started = time.perf_counter()
            images, labels = samples_in_memory(model, None, sample_fn, latent_shape=(3, side), cfg_scale=cfg_scale,
                                               device=device, count=args.num_samples, seed=seed,
                                               batch_size=args.batch_size, precision=precision)
            rate = args.num_samples / (time.perf_counter() - started)
            fid = compute_metrics(images, reference, extractor=extractor, labels=labels, progress=False, kid=False,
                                  num_workers=0)["fid"]
            fids[precision].append(fid)
            rates[precision].append(rate)
            table.row([precision, seed, f"{fid:.3f}", f"{rate:.0f}"])
    summary(fids, rates)


def summary(fids: dict, rates: dict):
    """Per precision: mean FID, the paired difference from float32, float32's seed spread, the speed ratio."""
    base = fids.get("fp32")
    spread = statistics.stdev(base) if base and len(base) > 1 else float("nan")
    table = StreamTable(f"Summary (float32's seed-to-seed standard deviation: {spread:.3f})",
                        ["precision", "mean FID", "mean difference from fp32", "within the spread",
                         "median images/s", "speed / fp32"])
    for precision, values in fids.items():
        difference = float(np.mean(np.subtract(values, base))) if base else float("nan")
        speed = statistics.median(rates[precision]) / statistics.median(rates["fp32"]) if base else float("nan")
        table.row([precision, f"{np.mean(values):.3f}", f"{difference:+.3f}",
                   "yes" if abs(difference) < spread else "no", f"{statistics.median(rates[precision]):.0f}",
                   f"{speed:.2f}"])


if __name__ == "__main__":
    main()
