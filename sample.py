"""Sample a DiT or SiT checkpoint: a PNG grid (as DiT's and SiT's sample.py), or with --num-fid-samples N
the images and `samples.npz` of an FID run (as sample_ddp.py), on any number of `accelerate launch`
processes, resumable. See docs/sampling.md.

    python sample.py --ckpt DiT-XL-2-256x256.pt --sampler ddim --num-sampling-steps 50
    accelerate launch sample.py --ckpt model.safetensors --num-fid-samples 50000 --sample-dir samples/run
"""
import argparse
import os
import time

import torch
from accelerate import Accelerator

from gen import checks, load_pretrained, sampling
from gen.cli import ArgumentParser, parse_with_config, run_command
from gen.errors import UserError
from gen.vae import load_vae

DIT_GRID_LABELS = [207, 360, 387, 974, 88, 979, 417, 279]  # DiT's sample.py classes


def none_or_str(value):
    return None if value in (None, "None", "none") else value


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    model = parser.add_argument_group("model")
    model.add_argument("--ckpt", required=True, help="exported .safetensors, training checkpoint folder or "
                       "official DiT/SiT .pt")
    model.add_argument("--model", default=None, help="e.g. DiT-XL/2; read from the checkpoint when it says, "
                       "else from an official file name")
    model.add_argument("--image-size", type=int, default=None, help="pixels (default: what the model makes)")
    model.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's (1000)")
    model.add_argument("--vae", default="ema", help="ema | mse | a diffusers AutoencoderKL folder | none")
    model.add_argument("--tf32", action="store_true", help="TF32 matmuls on GPUs (faster, slightly different)")
    steps = parser.add_argument_group("sampling")
    steps.add_argument("--cfg-scale", type=float, default=None, help="default 4.0 for grids, 1.5 for FID")
    steps.add_argument("--num-sampling-steps", type=int, default=250)
    steps.add_argument("--seed", "--global-seed", dest="seed", type=int, default=0)
    steps.add_argument("--sampler", choices=sampling.DIT_SAMPLERS, default="ddpm", help="DiT's sampler")
    steps.add_argument("--ddim-eta", type=float, default=0.0, help="DDIM noise (0: deterministic)")
    sit = parser.add_argument_group("SiT transport and ODE/SDE (as SiT's sample.py)")
    sit.add_argument("--mode", choices=sampling.SIT_MODES, default="ODE")
    sit.add_argument("--path-type", choices=["Linear", "GVP", "VP"], default="Linear")
    sit.add_argument("--prediction", choices=["velocity", "score", "noise"], default="velocity")
    sit.add_argument("--loss-weight", type=none_or_str, choices=[None, "velocity", "likelihood"], default=None)
    sit.add_argument("--train-eps", type=float, default=None)
    sit.add_argument("--sample-eps", type=float, default=None)
    sit.add_argument("--sampling-method", default=None, help="ODE: a torchdiffeq method (default dopri5); "
                     "SDE: Euler (default) or Heun")
    sit.add_argument("--atol", type=float, default=1e-6, help="ODE absolute tolerance (adaptive methods)")
    sit.add_argument("--rtol", type=float, default=1e-3, help="ODE relative tolerance (adaptive methods)")
    sit.add_argument("--reverse", action="store_true", help="ODE from data to noise")
    sit.add_argument("--diffusion-form", default="sigma", choices=["constant", "SBDM", "sigma", "linear",
                     "decreasing", "increasing-decreasing"])
    sit.add_argument("--diffusion-norm", type=float, default=1.0)
    sit.add_argument("--last-step", type=none_or_str, default="Mean", choices=[None, "Mean", "Tweedie", "Euler"])
    sit.add_argument("--last-step-size", type=float, default=0.04)
    grid = parser.add_argument_group("grid mode (without --num-fid-samples)")
    grid.add_argument("--class-labels", type=int, nargs="+", default=None, help=f"default {DIT_GRID_LABELS}")
    grid.add_argument("--nrow", type=int, default=4)
    grid.add_argument("--output", default="sample.png")
    many = parser.add_argument_group("N-sample mode")
    many.add_argument("--num-fid-samples", type=int, default=None)
    many.add_argument("--per-proc-batch-size", type=int, default=32)
    many.add_argument("--sample-dir", default="samples")
    many.add_argument("--class-order", choices=sampling.CLASS_ORDERS, default="random",
                      help="random: uniform classes as DiT's sample_ddp.py; balanced: image i has class i mod N")
    return parser


def sampler_for(args, family: str):
    if family == "DiT":
        return sampling.make_sampler("DiT", args.sampler, args.num_sampling_steps, ddim_eta=args.ddim_eta)
    return sampling.make_sampler(
        "SiT", args.mode, args.num_sampling_steps, path_type=args.path_type, prediction=args.prediction,
        loss_weight=args.loss_weight, train_eps=args.train_eps, sample_eps=args.sample_eps,
        sampling_method=args.sampling_method, atol=args.atol, rtol=args.rtol, reverse=args.reverse,
        diffusion_form=args.diffusion_form, diffusion_norm=args.diffusion_norm, last_step=args.last_step,
        last_step_size=args.last_step_size)


def load_model_and_vae(args, device):
    """The model, the VAE and the latent (channels, side), checked against each other and the flags."""
    vae = load_vae(args.vae, device)
    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = load_pretrained(args.ckpt, device, expected_name=args.model, image_size=args.image_size, **options)
    config = model.config
    if args.num_classes is not None and config["num_classes"] != args.num_classes:
        raise UserError(f"{args.ckpt} has {config['num_classes']} classes, not --num-classes {args.num_classes}")
    factor = 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)
    channels = 3 if vae is None else vae.config.latent_channels
    image_size = args.image_size or config["input_size"] * factor
    if (channels, image_size) != (config["in_channels"], config["input_size"] * factor):
        raise UserError(f"{model.name} makes {config['in_channels']}x{config['input_size']}x{config['input_size']} "
                        f"latents but --vae {args.vae} at --image-size {image_size} needs {channels}x"
                        f"{image_size // factor}x{image_size // factor}; check --vae (none for pixel models) and "
                        f"--image-size")
    return model, vae, (channels, config["input_size"])


def settings_of(args, model) -> dict:
    """What decides the images of an N-sample run (not the sample count or the batch layout)."""
    skip = {"num_fid_samples", "per_proc_batch_size", "sample_dir", "config", "class_labels", "nrow", "output",
            "debug"}
    return {"model": model.name, **{k: v for k, v in sorted(vars(args).items()) if k not in skip}}


def run_grid(args, model, vae, latent_shape, sample_fn, device):
    labels = args.class_labels or DIT_GRID_LABELS
    stats = {}
    start = time.perf_counter()
    images = sampling.sample_grid(model, vae, labels, sample_fn, latent_shape=latent_shape, seed=args.seed,
                                  cfg_scale=args.cfg_scale, device=device, stats=stats, progress=True)
    sampling.save_grid(images, args.nrow, args.output)
    print(f"saved {args.output}: {len(labels)} images in {time.perf_counter() - start:.1f}s, "
          f"{stats['model_evaluations']} model evaluations")


def run_many(args, model, vae, latent_shape, sample_fn, accelerator):
    os.makedirs(args.sample_dir, exist_ok=True)
    sampling.check_settings(args.sample_dir, settings_of(args, model), accelerator.is_main_process)
    stats = {}
    start = time.perf_counter()
    made = sampling.sample_to_folder(accelerator, model, vae, sample_fn, sample_dir=args.sample_dir,
                            num_samples=args.num_fid_samples, batch_size=args.per_proc_batch_size,
                            latent_shape=latent_shape, seed=args.seed, cfg_scale=args.cfg_scale,
                            class_order=args.class_order, stats=stats)
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - start
    batches = max(stats.get("batches", 0), 1)
    accelerator.print(f"made {made} images in {seconds:.1f}s ({made / seconds:.2f} images/s on "
                      f"{accelerator.num_processes} processes; {stats.get('model_evaluations', 0) / batches:.0f} "
                      f"model evaluations per batch)")
    if accelerator.is_main_process:
        labels = sampling.image_labels(args.seed, args.num_fid_samples, model.config["num_classes"],
                                       args.class_order)
        print(f"wrote {sampling.pack_npz(args.sample_dir, args.num_fid_samples, labels)}")
    accelerator.wait_for_everyone()


def check_arguments(args):
    """Ranges and output paths, before the checkpoint is read or anything is sampled."""
    checks.at_least(args, 1, "num_fid_samples", "per_proc_batch_size", "num_sampling_steps", "nrow",
                    "image_size", "num_classes")
    checks.guidance_scale(args.cfg_scale)
    checks.at_least(args, 0.0, "ddim_eta", "diffusion_norm")
    checks.positive(args, "atol", "rtol")
    checks.within(args, "last_step_size", 0.0, 1.0, high_open=True)
    if not os.path.exists(args.ckpt):
        raise UserError(f"--ckpt {args.ckpt} not found; pass an exported .safetensors, a training checkpoint "
                        f"folder or an official DiT/SiT .pt")
    if args.num_fid_samples is None:
        checks.writable_file(args.output, "--output")
    else:
        checks.writable_folder(args.sample_dir, "--sample-dir")


def main(argv=None):
    args = parse_with_config(build_parser(), argv)
    check_arguments(args)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    accelerator = Accelerator()
    grid_mode = args.num_fid_samples is None
    if args.cfg_scale is None:
        args.cfg_scale = 4.0 if grid_mode else 1.5
    if grid_mode and not accelerator.is_main_process:
        return
    model, vae, latent_shape = load_model_and_vae(args, accelerator.device)
    sample_fn = sampler_for(args, model.config["family"])
    labels = args.class_labels or ([] if not grid_mode else DIT_GRID_LABELS)
    if any(not 0 <= label < model.config["num_classes"] for label in labels):
        raise UserError(f"--class-labels {labels} must lie in [0, {model.config['num_classes']}) for {model.name}")
    if grid_mode:
        run_grid(args, model, vae, latent_shape, sample_fn, accelerator.device)
    else:
        run_many(args, model, vae, latent_shape, sample_fn, accelerator)


if __name__ == "__main__":
    run_command(main)
