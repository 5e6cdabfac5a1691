"""Sample a DiT or SiT checkpoint: a PNG grid (as DiT's and SiT's sample.py), or with --num-fid-samples N
the images and `samples.npz` of an FID run (as sample_ddp.py), on any number of `accelerate launch`
processes, resumable. The weights file says which VAE and which diffusion or transport settings it was trained
with, and which sampler, steps and guidance its training sampled with, so `--ckpt FILE` alone is enough; a flag
that contradicts the file fails. See docs/sampling.md.

    python sample.py --ckpt results/demo/model.safetensors
    python sample.py --ckpt DiT-XL-2-256x256.pt --sampler ddim --num-sampling-steps 50
    python sample.py SDE --ckpt SiT-XL-2-256x256.pt                  # SiT's positional mode
    accelerate launch sample.py --ckpt model.safetensors --num-fid-samples 50000 --sample-dir samples/run
"""
import os
import time

from accelerate import Accelerator

from common.cli import ArgumentParser, parse_with_config, run_command
from common.errors import UserError
from common.processes import decided_by_main
from gen import sampling
from gen.family import FAMILIES
from gen.sampling.autoguidance import Autoguided
from gen.sampling.timing import stage_summary
from gen.settings import DataSettings, ModelSettings, SamplerSettings, SamplingSettings, checks
from gen.settings.flags import add_flags, add_sampling_flags
from gen.settings.sample import DIT_GRID_LABELS, GridSettings, ManySamplesSettings, WeightsSettings
from gen.weights.loading import load_for_sampling, load_guide, ready_sampler


def build_parser():
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("positional_mode", nargs="?", choices=sampling.SIT_MODES, metavar="{ODE,SDE}",
                        help="SiT's habit: the same as --mode")
    model = parser.add_argument_group("model")
    add_flags(model, WeightsSettings, only=["ckpt", "model", "image_size", "num_classes"], title="")
    add_flags(model, DataSettings, only=["vae"], unset=True, title="")
    add_flags(model, SamplerSettings, only=["precision"], title="")
    add_flags(model, WeightsSettings, only=["compile"], title="")
    add_flags(model, ModelSettings, only=["vca_kernels"], title="")
    add_flags(model, WeightsSettings, only=["guide_ckpt"], title="")
    for family in FAMILIES.values():  # each family's process, as its training took it
        add_flags(parser, family.process_settings, unset=True,
                  helps={"learn_sigma": "learned variance; default: what the network's output says (a contradicting "
                                        "flag fails)"})
    add_sampling_flags(parser, helps={"cfg_scale": "guidance scale (1: none); default: the weights file's record, "
                                                   f"else {sampling.GUIDANCE_FOR_PICTURES} for grids, "
                                                   f"{sampling.GUIDANCE_FOR_FID} for FID"})
    add_flags(parser, WeightsSettings, only=["seed"], title="")
    add_flags(parser, GridSettings)
    add_flags(parser, ManySamplesSettings)
    return parser


# -- what the weights file says, and the flags that may not contradict it ----------------------------------------
def load_model_and_vae(args, device):
    """The weights (gen.weights.loading, shared with gen.pipeline); the flags that were left None take the file's
    values."""
    chosen_process = {key: getattr(args, key) for family in FAMILIES.values() for key in family.process_defaults}
    weights = load_for_sampling(args.ckpt, device, vae=args.vae, precision=args.precision, model_name=args.model,
                                image_size=args.image_size, num_classes=args.num_classes,
                                vca_kernels=args.vca_kernels, compile=args.compile, process=chosen_process)
    model = weights.model
    args.model, args.vae, args.image_size, args.num_classes = (model.name, weights.vae_name, weights.image_size,
                                                               model.config.num_classes)
    return weights


def default_labels(num_classes: int, per_row: int) -> list[int]:
    """DiT's sample.py's ImageNet classes; for other models, as training's grid, a row of each shown class."""
    if num_classes == 1000:
        return DIT_GRID_LABELS
    return [label for label in sampling.grid_classes(num_classes) for _ in range(per_row)]


# -- the two modes -----------------------------------------------------------------------------------------------
def row_label(labels: list[int]) -> str:
    """A row's class ids at its left: one when the row is one class's."""
    return str(labels[0]) if len(set(labels)) == 1 else " ".join(map(str, labels))


def run_grid(args, model, vae, latent_shape, sample_fn, device):
    stats = {}
    start = time.perf_counter()
    images = sampling.sample_grid(model, vae, args.class_labels, sample_fn, latent_shape=latent_shape,
                                  seed=args.seed, cfg_scale=args.cfg_scale, device=device, stats=stats,
                                  progress=True, precision=args.precision)
    rows = [args.class_labels[start : start + args.nrow] for start in range(0, len(args.class_labels), args.nrow)]
    sampling.save_grid(images, args.nrow, args.output,
                       row_labels=[row_label(row) for row in rows] if args.label_rows else None)
    print(f"saved {args.output}: {len(args.class_labels)} images in {time.perf_counter() - start:.1f}s, "
          f"{stats['model_evaluations']} model evaluations")


def run_many(args, model, vae, latent_shape, sample_fn, accelerator, settings, family):
    os.makedirs(args.sample_dir, exist_ok=True)
    skip = {"num_fid_samples", "per_proc_batch_size", "sample_dir", "config", "class_labels", "nrow", "output",
            "debug", "positional_mode", "label_rows", "compile"}
    others = {key for other in FAMILIES.values() for key in other.options() if key not in family.options()}
    recorded = {k: v for k, v in sorted(vars(args).items()) if k not in skip and k not in others}
    recorded.update(settings)  # the process as used: the file's, where the flags left it None
    decided_by_main(accelerator, lambda: sampling.check_settings(args.sample_dir, recorded))
    stats = {}
    start = time.perf_counter()
    made = sampling.sample_to_folder(accelerator, model, vae, sample_fn, sample_dir=args.sample_dir,
                                     num_samples=args.num_fid_samples, batch_size=args.per_proc_batch_size,
                                     latent_shape=latent_shape, seed=args.seed, cfg_scale=args.cfg_scale,
                                     class_order=args.class_order, precision=args.precision, stats=stats)
    own_seconds = time.perf_counter() - start  # the stages below are this process's
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - start
    batches = max(stats.get("batches", 0), 1)
    accelerator.print(f"made {made} images in {seconds:.1f}s ({made / seconds:.2f} images/s on "
                      f"{accelerator.num_processes} processes, {args.precision}; "
                      f"{stats.get('model_evaluations', 0) / batches:.0f} model evaluations per batch)")
    accelerator.print(f"time per stage (main process): {stage_summary(stats.get('seconds', {}), own_seconds)}")
    if accelerator.is_main_process:
        start = time.perf_counter()
        labels = sampling.image_labels(args.seed, args.num_fid_samples, model.config.num_classes, args.class_order)
        path = sampling.pack_npz(args.sample_dir, args.num_fid_samples, labels,
                                 shape=(args.image_size, args.image_size, 3))
        print(f"wrote {path} in {time.perf_counter() - start:.1f}s")
    accelerator.wait_for_everyone()


def check_arguments(args):
    """Ranges and output paths, before the checkpoint is read or anything is sampled."""
    if args.positional_mode is not None:
        if args.mode not in (None, "ODE", args.positional_mode):  # "ODE" is --mode's default
            raise UserError(f"{args.positional_mode} and --mode {args.mode} disagree; give one of them")
        args.mode = args.positional_mode
    for concern in (WeightsSettings, SamplingSettings, GridSettings, ManySamplesSettings):
        concern.validate(args)
    if args.num_fid_samples is None:
        checks.writable_file(args.output, "--output")
    else:
        checks.writable_folder(args.sample_dir, "--sample-dir")


COMPILE_PAYS_FROM = 3000  # images per process from which --compile's 20 s pay back (docs/benchmarks.md)


def compile_would_pay(args, accelerator) -> bool:
    per_process = args.num_fid_samples / accelerator.num_processes
    return accelerator.device.type == "cuda" and not args.compile and per_process >= COMPILE_PAYS_FROM


def main(argv=None):
    args = parse_with_config(build_parser(), argv)
    check_arguments(args)
    accelerator = Accelerator()
    args.precision = sampling.resolve_precision(args.precision, accelerator.device)  # recorded resolved
    grid_mode = args.num_fid_samples is None
    if grid_mode and not accelerator.is_main_process:
        return
    weights = load_model_and_vae(args, accelerator.device)
    model, vae, latent_shape = weights.model, weights.vae, weights.latent_shape
    if args.guide_ckpt is not None:
        model = Autoguided(model, load_guide(args.guide_ckpt, model, accelerator.device,
                                             latent_norm=getattr(vae, "channel_norm", None)))
    ready = ready_sampler(weights, args, args.ckpt, pictures=grid_mode)
    sample_fn, settings = ready.sample_fn, dict(vae=weights.vae_name, **weights.process)  # settings used
    num_classes = model.config.num_classes
    if grid_mode and args.class_labels is None:
        args.class_labels = default_labels(num_classes, args.nrow)
        args.label_rows = args.label_rows or num_classes != 1000  # training's grid: a labelled row per class
    if any(not 0 <= label < num_classes for label in args.class_labels or []):
        raise UserError(f"--class-labels {args.class_labels} must lie in [0, {num_classes}) for {model.name}")
    if grid_mode:
        run_grid(args, model, vae, latent_shape, sample_fn, accelerator.device)
    else:
        if compile_would_pay(args, accelerator):
            accelerator.print(f"tip: --compile made the network 2.3x faster after about 20 s of compiling (measured "
                              f"on an H200, DiT-S/2, bf16); it pays from about {COMPILE_PAYS_FROM:,} images per "
                              f"process")
        run_many(args, model, vae, latent_shape, sample_fn, accelerator, settings, ready.family)



if __name__ == "__main__":
    run_command(main)
