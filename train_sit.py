"""Train a SiT (an interpolant transport: Linear/GVP/VP paths, velocity/noise/score prediction).

    accelerate launch train_sit.py --config configs/sit-s2-vca-256.yaml --latents data/latents-256-ema
    python train_sit.py --config configs/demo.yaml            # the digits demo of `make demo`

See docs/training.md for the paper settings, resuming and multi-GPU launches.
"""

from gen.args import add_training_arguments
from gen.cli import ArgumentParser, parse_with_config, run_command
from gen.diffusion import create_transport
from gen.sampling import SIT_MODES, make_sampler
from gen.training import TransportLoss, train


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    add_training_arguments(parser, default_model="SiT-S/2-VCA")
    transport = parser.add_argument_group("transport (SiT's flags)")
    transport.add_argument("--path-type", choices=["Linear", "GVP", "VP"], default="Linear")
    transport.add_argument("--prediction", choices=["velocity", "noise", "score"], default="velocity")
    transport.add_argument("--loss-weight", choices=["velocity", "likelihood"], default=None)
    transport.add_argument("--train-eps", type=float, default=None)
    transport.add_argument("--sample-eps", type=float, default=None)
    transport.add_argument("--sampler", choices=SIT_MODES, default="ODE", help="for grids and final samples")
    transport.add_argument("--sampling-method", default=None,
                           help="ODE: dopri5 (default), euler, heun2, rk4...; SDE: Euler (default) or Heun")
    return parse_with_config(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    transport_options = dict(path_type=args.path_type, prediction=args.prediction, loss_weight=args.loss_weight,
                             train_eps=args.train_eps, sample_eps=args.sample_eps)
    sample_fn = make_sampler("SiT", args.sampler, args.num_sampling_steps, sampling_method=args.sampling_method,
                             **transport_options)
    loss_fn = TransportLoss(create_transport(**transport_options))
    return train(args, family="SiT", loss_fn=loss_fn, sample_fn=sample_fn)


if __name__ == "__main__":
    run_command(main)
