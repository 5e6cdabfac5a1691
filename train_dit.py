"""Train a DiT (ADM Gaussian diffusion: eps prediction with learned variance by default) on images, latents or
the built-in digits.

    accelerate launch train_dit.py --config configs/dit-s2-vca-256.yaml --latents data/latents-256-ema
    python train_dit.py --model DiT-Mini/4-VCA --image-size 16 --num-classes 10 --vae none --max-steps 500

See docs/training.md for the paper settings, resuming and multi-GPU launches.
"""
from gen.args import add_training_flags, diffusion_settings, sampler_from_args
from gen.cli import ArgumentParser, parse_with_config, run_command
from gen.diffusion import create_diffusion
from gen.training import DiffusionLoss, train


def parse_args(argv=None):
    return parse_with_config(add_training_flags(ArgumentParser(description=__doc__), "DiT"), argv)


def main(argv=None):
    args = parse_args(argv)
    process = diffusion_settings(args)
    loss_fn = DiffusionLoss(create_diffusion(timestep_respacing="", **process))  # training: every step
    return train(args, family="DiT", loss_fn=loss_fn, sample_fn=sampler_from_args(args, "DiT", process),
                 process=process)


if __name__ == "__main__":
    run_command(main)
