"""The flags train_dit.py and train_sit.py share: DiT/SiT's names, plus what Accelerate training adds.

Every flag can also come from `--config configs/X.yaml` (gen.cli.parse_with_config); the command line wins.
`check_training_arguments` checks them all before anything is loaded.
"""
import argparse
import os

from . import checks
from .errors import UserError
from .models.zoo import model_config

# Flags that decide what a checkpoint's weights, optimiser state and data position mean: a resumed run must
# keep them. Optimiser settings (lr, weight decay, EMA decay, clipping) may change and are applied.
FIXED_ON_RESUME = ("model", "data_path", "latents", "image_size", "num_classes", "vae", "random_flip",
                   "global_batch_size", "global_seed", "class_dropout_prob",
                   "path_type", "prediction", "loss_weight", "train_eps")
APPLIED_ON_RESUME = ("lr", "weight_decay", "ema_decay", "max_grad_norm")


def add_training_arguments(parser: argparse.ArgumentParser, default_model: str):
    data = parser.add_argument_group("data")
    data.add_argument("--data-path", default=None,
                      help="ImageFolder (ImageNet's train layout: root/<class>/<image>); without it and without "
                           "--latents, the built-in scikit-learn digits")
    data.add_argument("--latents", default=None, help="a folder made by extract_latents.py; replaces --data-path")
    data.add_argument("--image-size", type=int, default=256)
    data.add_argument("--num-classes", type=int, default=1000)
    data.add_argument("--vae", default="ema", help="ema | mse | a local AutoencoderKL folder | none (pixel space)")
    data.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=True,
                      help="horizontal flips (DiT's augmentation); off for data that mirroring changes, e.g. digits")
    data.add_argument("--strict", action="store_true", help="stop at an unreadable image instead of skipping it")
    data.add_argument("--num-workers", type=int, default=4)

    model = parser.add_argument_group("model and optimisation")
    model.add_argument("--model", default=default_model, help="e.g. DiT-S/2-VCA, SiT-XL/2, SiT-Mini/4-VCA")
    model.add_argument("--class-dropout-prob", type=float, default=0.1, help="label dropout for guidance")
    model.add_argument("--global-batch-size", type=int, default=256, help="split evenly over the processes")
    model.add_argument("--epochs", type=int, default=None, help="stop after this many epochs (and/or --max-steps)")
    model.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    model.add_argument("--lr", type=float, default=1e-4)
    model.add_argument("--weight-decay", type=float, default=0.0)
    model.add_argument("--ema-decay", type=float, default=0.9999)
    model.add_argument("--max-grad-norm", type=float, default=None, help="clip the gradient norm (off by default)")
    model.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                       help="autocast precision (default: what `accelerate launch` was given, else no)")
    model.add_argument("--gradient-checkpointing", action="store_true", help="recompute blocks to save memory")
    model.add_argument("--compile", action="store_true", help="torch.compile the model")
    model.add_argument("--global-seed", type=int, default=0)

    run = parser.add_argument_group("logging, checkpoints, samples")
    run.add_argument("--results-dir", default=None, help="the run's folder (default: results/<model>)")
    run.add_argument("--resume", default=None, help="'latest' (in --results-dir) or a checkpoint folder")
    run.add_argument("--log-every", type=int, default=100)
    run.add_argument("--ckpt-every", type=int, default=50_000)
    run.add_argument("--log-with", default="auto",
                     help="Accelerate tracker: auto (tensorboard when installed), none, tensorboard, wandb, ...")
    run.add_argument("--sample-every", type=int, default=10_000, help="EMA sample grid every N steps (0: never)")
    run.add_argument("--grid-classes", type=int, nargs="+", default=None,
                     help="a grid row per class (default: all classes up to 10, else 8 spread over them)")
    run.add_argument("--grid-columns", type=int, default=8)
    run.add_argument("--cfg-scale", type=float, default=4.0, help="guidance of grids and final samples")
    run.add_argument("--num-sampling-steps", type=int, default=250)
    run.add_argument("--final-samples", type=int, default=0,
                     help="after training, this many EMA samples (balanced over classes) into samples.npz")
    return parser


def check_training_arguments(args, family: str):
    """Every value in range and every name known, before the VAE, the data or the model are loaded."""
    config = model_config(args.model)  # an unknown name fails here, in one line
    if config["family"] != family:
        other = "train_sit.py" if family == "DiT" else "train_dit.py"
        raise UserError(f"train_{family.lower()}.py trains {family} models; use {other} for --model {args.model}")
    if args.epochs is None and args.max_steps is None:
        raise UserError("give --epochs and/or --max-steps (the paper settings: --max-steps 400000)")
    checks.at_least(args, 1, "epochs", "max_steps", "log_every", "ckpt_every", "global_batch_size", "num_classes",
                    "image_size", "grid_columns", "num_sampling_steps")
    checks.at_least(args, 0, "sample_every", "final_samples", "num_workers")
    checks.positive(args, "lr", "max_grad_norm")
    checks.at_least(args, 0.0, "weight_decay")
    checks.within(args, "ema_decay", 0.0, 1.0)
    checks.within(args, "class_dropout_prob", 0.0, 1.0, high_open=True)
    checks.guidance_scale(args.cfg_scale)
    if args.cfg_scale > 1 and args.class_dropout_prob <= 0:
        raise UserError("--cfg-scale > 1 needs the null class that --class-dropout-prob > 0 trains; "
                        "pass --cfg-scale 1 or a positive --class-dropout-prob")
    if args.grid_classes and any(not 0 <= c < args.num_classes for c in args.grid_classes):
        raise UserError(f"--grid-classes {args.grid_classes} must lie in [0, {args.num_classes})")
    for dest in ("data_path", "latents"):
        path = getattr(args, dest)
        if path is not None and not os.path.isdir(path):
            raise UserError(f"{checks.flag(dest)} {path} is not a folder; check the path")
    if args.resume is None:
        return
    if args.resume != "latest" and not os.path.isdir(args.resume):
        raise UserError(f"--resume {args.resume} is not a folder; pass 'latest' or a checkpoint folder "
                        f"such as RESULTS/ckpt/step-0001000")


def resume_differences(saved: dict, args) -> tuple[dict, dict]:
    """({flag: (saved, now)} that must not change, {flag: (saved, now)} that will be applied)."""
    now = vars(args)
    refused = {k: (saved[k], now[k]) for k in FIXED_ON_RESUME if k in saved and k in now and saved[k] != now[k]}
    applied = {k: (saved[k], now[k]) for k in APPLIED_ON_RESUME if k in saved and k in now and saved[k] != now[k]}
    return refused, applied
