"""Train a DiT (ADM Gaussian diffusion: eps prediction with learned variance by default) on images, latents or
the built-in digits.

    accelerate launch train_dit.py --config configs/dit-s2-vca-256.yaml --latents data/latents-256-ema
    python train_dit.py --model DiT-Mini/4-VCA --image-size 16 --num-classes 10 --vae none --max-steps 500

See docs/training.md for the paper settings, resuming and multi-GPU launches.
"""
from common.cli import run_command
from gen.training.entry import parse_training_flags, train_dit


def parse_args(argv=None):
    return parse_training_flags("DiT", argv, __doc__)


def main(argv=None):
    return train_dit(parse_args(argv))


if __name__ == "__main__":
    run_command(main)
