"""Train a SiT (an interpolant transport: Linear/GVP/VP paths, velocity/noise/score prediction).

    accelerate launch train_sit.py --config configs/sit-s2-vca-256.yaml --latents data/latents-256-ema
    python train_sit.py --config configs/demo.yaml            # the digits demo of `make demo`

See docs/training.md for the paper settings, resuming and multi-GPU launches.
"""
from gen.args import add_training_flags, sampler_from_args, transport_settings
from gen.cli import ArgumentParser, parse_with_config, run_command
from gen.diffusion import create_transport
from gen.training import TransportLoss, train


def parse_args(argv=None):
    return parse_with_config(add_training_flags(ArgumentParser(description=__doc__), "SiT"), argv)


def main(argv=None):
    args = parse_args(argv)
    process = transport_settings(args)
    loss_fn = TransportLoss(create_transport(**process))
    return train(args, family="SiT", loss_fn=loss_fn, sample_fn=sampler_from_args(args, "SiT", process),
                 process=process)


if __name__ == "__main__":
    run_command(main)
