"""Train a SiT (an interpolant transport: Linear/GVP/VP paths, velocity/noise/score prediction).

    accelerate launch train_sit.py --config configs/sit-s2-vca-256.yaml --latents data/latents-256-ema
    python train_sit.py --config configs/demo.yaml            # the digits demo of `make demo`

See docs/training.md for the paper settings, resuming and multi-GPU launches.
"""
from common.cli import run_command
from gen.training.entry import parse_training_flags, train_sit


def parse_args(argv=None):
    return parse_training_flags("SiT", argv, __doc__)


def main(argv=None):
    return train_sit(parse_args(argv))


if __name__ == "__main__":
    run_command(main)
