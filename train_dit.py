"""Train a DiT (Gaussian diffusion, eps prediction with learned variance) on images, latents or the digits.

    accelerate launch train_dit.py --config configs/dit-s2-vca-256.yaml --latents data/latents-256-ema
    python train_dit.py --model DiT-Mini/4-VCA --image-size 16 --num-classes 10 --vae none --max-steps 500

See docs/training.md for the paper settings, resuming and multi-GPU launches.
"""


from gen.args import add_training_arguments
from gen.cli import ArgumentParser, parse_with_config, run_command
from gen.diffusion import create_diffusion
from gen.sampling import DIT_SAMPLERS, make_sampler
from gen.training import DiffusionLoss, train


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    add_training_arguments(parser, default_model="DiT-S/2-VCA")
    parser.add_argument("--sampler", choices=DIT_SAMPLERS, default="ddpm", help="for grids and final samples")
    return parse_with_config(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    loss_fn = DiffusionLoss(create_diffusion(timestep_respacing=""))  # training uses all 1000 steps
    sample_fn = make_sampler("DiT", args.sampler, args.num_sampling_steps)
    return train(args, family="DiT", loss_fn=loss_fn, sample_fn=sample_fn)


if __name__ == "__main__":
    run_command(main)
