"""Train a DiT (ADM Gaussian diffusion: eps prediction with learned variance by default) on images, latents or
the built-in digits.

    accelerate launch train_dit.py --config configs/dit-s2-vca-256.yaml --latents data/latents-256-ema
    python train_dit.py --model DiT-Mini/4-VCA --image-size 16 --num-classes 10 --vae none --max-steps 500

See docs/training.md for the paper settings, resuming and multi-GPU launches.
"""
from common.cli import parse_with_config, run_command
from gen.training.entry import train_dit, training_parser


def parse_args(argv=None):
    return parse_with_config(training_parser("DiT", __doc__), argv)


def main(argv=None):
    return train_dit(parse_args(argv))


if __name__ == "__main__":
    run_command(main)
