"""The flags train_dit.py and train_sit.py share: DiT/SiT's names, plus what Accelerate training adds.

Every flag can also come from `--config configs/X.yaml` (gen.cli.parse_with_config); the command line wins.
"""
import argparse


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
