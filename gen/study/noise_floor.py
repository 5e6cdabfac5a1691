"""The evaluation's own noise: one trained model's FID under several sampling seeds, scored exactly as the run's
evaluations were (its sampler, guidance, sample count, feature network and reference). A FID difference
smaller than the spread of these scores cannot be told from the choice of sampling seed.

    measure_noise_floor("results/study-digits/runs/SiT-Mini-2-seed0", seeds=[0, 1, 2])   # {"fids", "std", ...}
"""
import json
import os
import statistics

import torch

from common.errors import UserError

from ..models.zoo import model_config
from ..sampling import resolve_precision, samples_in_memory
from ..settings import TRAINING_SETTINGS, from_record
from ..training.evaluation import evaluation_reference, score_images
from ..weights.loading import prepare_sampling


def measure_noise_floor(run_dir, seeds: list[int], device=None) -> dict:
    """FID of the run's final export under each sampling seed, and their standard deviation (the noise floor)."""
    export, args_path = os.path.join(run_dir, "model.safetensors"), os.path.join(run_dir, "args.json")
    if not (os.path.isfile(export) and os.path.isfile(args_path)):
        raise UserError(f"the noise floor needs a finished run: {export} or {args_path} is missing; train it first")
    if len(seeds) < 2:
        raise UserError(f"the noise floor needs at least 2 sampling seeds, got {seeds}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with open(args_path) as handle:  # the run's settings; keys of another version are skipped
        record = json.load(handle)
    if "model" not in record:
        raise UserError(f"{args_path} names no model; it is not a training run's args.json")
    family = model_config(record["model"]).family
    settings = from_record(TRAINING_SETTINGS[family], record, strict=False)
    precision = resolve_precision(settings.precision, device)
    # the VAE in float32 and the run's kernels: as the run's own evaluations sampled
    sampling = prepare_sampling(export, device, settings, pictures=False, precision="fp32",
                                vca_kernels=settings.vca_kernels)
    weights, sample_fn = sampling.weights, sampling.sample_fn
    features = settings.evaluation_features()
    from fid.networks import build_extractor

    extractor, reference = build_extractor(features, device=device), evaluation_reference(settings, features)
    fids = []
    for seed in seeds:
        images, labels = samples_in_memory(weights.model, weights.vae, sample_fn, latent_shape=weights.latent_shape,
                                           cfg_scale=settings.cfg_scale, device=device, count=settings.eval_samples,
                                           seed=seed, batch_size=settings.eval_batch_size, precision=precision)
        fids.append(score_images(images, labels, reference, extractor, features)["fid"])
    return {"run": os.fspath(run_dir), "sampling_seeds": list(seeds), "fids": fids, "std": statistics.stdev(fids),
            "eval_samples": settings.eval_samples, "eval_features": features}
