"""Every command-line flag, declared once in groups (SiT's train_utils habit); each script takes its groups.

    add_training_flags(parser, "SiT")     # train_sit.py: data, VAE, model, optimisation, run, guidance, sampler
    add_sampler_flags(parser, "SiT", from_file=True)   # sample.py: None means "what the weights file says"

One name means one thing everywhere: `--sampler` is DiT's (ddpm, ddim, dpm-solver), `--mode` SiT's (ODE, SDE),
`--sampling-method` the ODE or SDE integrator. Every flag can also come from `--config configs/X.yaml`
(common.cli.parse_with_config); the command line wins. `check_training_arguments` checks them before anything loads.
"""
import argparse
import importlib.util
import inspect
import os

from common.cli import none_or_str
from common.errors import UserError

from . import checks
from .diffusion import create_diffusion, create_transport
from .models.vca import KERNELS
from .models.zoo import model_config
from .sampling import (
    DEFAULT_PRECISION,
    DIT_SAMPLER_DEFAULTS,
    DIT_SAMPLERS,
    GUIDANCE_FOR_FID,
    GUIDANCE_FOR_PICTURES,
    PRECISIONS,
    SIT_MODES,
    SIT_SAMPLER_DEFAULTS,
    make_sampler,
)


def keyword_defaults(function, skip=()) -> dict:
    """{name: default} of `function`'s parameters that have one, but `skip`: its signature is their one home."""
    return {name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty and name not in skip}


# DiT's create_diffusion and SiT's create_transport defaults: what a training script uses unless told otherwise
DIFFUSION_DEFAULTS = keyword_defaults(create_diffusion, skip=("timestep_respacing",))  # sampling's, not training's
TRANSPORT_DEFAULTS = keyword_defaults(create_transport)
DEFAULT_IMAGE_SIZE = 256  # DiT's and SiT's ImageNet size
DIGITS_IMAGE_SIZE = 16  # the 8x8 digits twice enlarged: what the demo, the study and the digits FID network use
DEFAULT_WORKERS = 4


def _defaults(values: dict, from_file: bool) -> dict:
    return dict.fromkeys(values) if from_file else values


# -- what the network is and what it learns ----------------------------------------------------------------------
def add_vae_flags(parser, default="ema"):
    parser.add_argument("--vae", default=default,
                        help="ema | mse | a local AutoencoderKL folder | none (pixel space)" +
                        ("; default: what the weights file says" if default is None else ""))


def add_vca_kernels_flag(parser):
    parser.add_argument("--vca-kernels", choices=KERNELS, default="auto",
                        help="VCA's fast path: fused Triton kernels (triton), torch ops (torch), or auto: "
                             "triton on CUDA for head widths that are powers of 2 (measured faster there), "
                             "torch elsewhere")


def add_precision_flag(parser):
    """The arithmetic of sampling and evaluation (gen.sampling.precision); DiT's --tf32 is an alias."""
    parser.add_argument("--precision", choices=["auto", *PRECISIONS], default=DEFAULT_PRECISION,
                        help="sampling's network and VAE decode: fp32, tf32 (TF32 matmuls on GPUs), bf16 autocast, "
                             "or auto: bf16 on GPUs, fp32 on the CPU")
    parser.add_argument("--tf32", dest="precision", action="store_const", const="tf32",
                        help="the same as --precision tf32 (DiT's sample_ddp.py flag)")


def add_diffusion_flags(parser, from_file=False):
    """DiT's Gaussian diffusion (create_diffusion's options, DiT's defaults)."""
    group = parser.add_argument_group("diffusion (DiT)" + (": default, what the weights file says" if from_file
                                                           else ""))
    d = _defaults(DIFFUSION_DEFAULTS, from_file)
    group.add_argument("--noise-schedule", choices=["linear", "cosine"], default=d["noise_schedule"])
    group.add_argument("--predict-xstart", action=argparse.BooleanOptionalAction, default=d["predict_xstart"],
                       help="predict x_0 instead of eps (weights the high-noise steps more)")
    group.add_argument("--learn-sigma", action=argparse.BooleanOptionalAction, default=d["learn_sigma"],
                       help="learn the variance (DiT), else fixed")
    group.add_argument("--use-kl", action=argparse.BooleanOptionalAction, default=d["use_kl"],
                       help="train on the variational bound instead of MSE")
    group.add_argument("--sigma-small", action=argparse.BooleanOptionalAction, default=d["sigma_small"],
                       help="fixed variance beta~_t instead of beta_t (without --learn-sigma)")
    group.add_argument("--rescale-learned-sigmas", action=argparse.BooleanOptionalAction,
                       default=d["rescale_learned_sigmas"], help="scale the VB term by T/1000")
    group.add_argument("--diffusion-steps", type=int, default=d["diffusion_steps"])


def add_transport_flags(parser, from_file=False):
    """SiT's transport (create_transport's options, SiT's defaults)."""
    group = parser.add_argument_group("transport (SiT)" + (": default, what the weights file says" if from_file
                                                           else ""))
    d = _defaults(TRANSPORT_DEFAULTS, from_file)
    group.add_argument("--path-type", choices=["Linear", "GVP", "VP"], default=d["path_type"])
    group.add_argument("--prediction", choices=["velocity", "noise", "score"], default=d["prediction"])
    group.add_argument("--loss-weight", type=none_or_str, choices=[None, "velocity", "likelihood"],
                       default=d["loss_weight"])
    group.add_argument("--train-eps", type=float, default=d["train_eps"])
    group.add_argument("--sample-eps", type=float, default=d["sample_eps"])


def recorded_process(model, recorded: dict | None) -> dict:
    """The diffusion (DiT) or transport (SiT) settings `model` was trained with: the weights file's record
    (`recorded`, None for official files), else the family's defaults."""
    defaults = DIFFUSION_DEFAULTS if model.config.family == "DiT" else TRANSPORT_DEFAULTS
    process = dict(defaults, **(recorded or {}))
    if model.config.family == "DiT":
        process["learn_sigma"] = model.config.learn_sigma  # the network's output says it
    return process


def diffusion_settings(args) -> dict:
    return {key: getattr(args, key) for key in DIFFUSION_DEFAULTS}


def transport_settings(args) -> dict:
    return {key: getattr(args, key) for key in TRANSPORT_DEFAULTS}


# -- how images are drawn ------------------------------------------------------------------------------------------


def add_sampler_flags(parser, family=None, default_steps=250):
    """DiT's samplers (family "DiT" or None) and SiT's ODE and SDE (family "SiT" or None). With both (None: sample.py,
    which learns the family from the weights) the defaults are None, so that use_family_flags sees what was given
    and fills in the file's record; `default_steps` None: the steps too (sample.py)."""
    group = parser.add_argument_group("sampler")
    group.add_argument("--num-sampling-steps", type=int, default=default_steps,
                       help="(default: the weights file's record, else 250)" if default_steps is None else None)
    defaults = {**DIT_SAMPLER_DEFAULTS, **SIT_SAMPLER_DEFAULTS}
    d = dict.fromkeys(defaults) if family is None else defaults
    if family in ("DiT", None):
        group.add_argument("--sampler", choices=DIT_SAMPLERS, default=d["sampler"], help="DiT's sampler (ddpm)")
        group.add_argument("--ddim-eta", type=float, default=d["ddim_eta"], help="DDIM noise (0: deterministic)")
    if family in ("SiT", None):
        group.add_argument("--mode", choices=SIT_MODES, default=d["mode"], help="SiT's sampler: ODE (default) or SDE")
        group.add_argument("--sampling-method", default=None, help="ODE: a torchdiffeq method (default dopri5); "
                           "SDE: Euler (default) or Heun")
        group.add_argument("--atol", type=float, default=d["atol"], help="ODE absolute tolerance (1e-6)")
        group.add_argument("--rtol", type=float, default=d["rtol"], help="ODE relative tolerance (1e-3)")
        group.add_argument("--reverse", action="store_true", default=d["reverse"], help="ODE from data to noise")
        group.add_argument("--diffusion-form", default=d["diffusion_form"], choices=["constant", "SBDM", "sigma",
                           "linear", "decreasing", "increasing-decreasing"], help="SDE diffusion coefficient (sigma)")
        group.add_argument("--diffusion-norm", type=float, default=d["diffusion_norm"], help="(1.0)")
        group.add_argument("--last-step", type=none_or_str, default=d["last_step"],
                           choices=[None, "Mean", "Tweedie", "Euler"], help="(Mean)")
        group.add_argument("--last-step-size", type=float, default=d["last_step_size"], help="(0.04)")


def family_keys(family: str) -> tuple[str, ...]:
    """The sampler and process flags that belong to `family` alone."""
    if family == "DiT":
        return (*DIT_SAMPLER_DEFAULTS, *DIFFUSION_DEFAULTS)
    return (*SIT_SAMPLER_DEFAULTS, *TRANSPORT_DEFAULTS)


def sampler_record(args, family: str) -> dict:
    """The sampler flags, steps and guidance that training sampled with: what exports record and sample.py takes
    as its defaults for them."""
    keys = DIT_SAMPLER_DEFAULTS if family == "DiT" else SIT_SAMPLER_DEFAULTS
    return {"num_sampling_steps": args.num_sampling_steps, "cfg_scale": args.cfg_scale,
            **{key: getattr(args, key) for key in keys}}


def use_family_flags(args, family: str, ckpt, recorded: dict | None = None):
    """sample.py: a sampler or process flag of the other family, given by the user, is refused; then the flags not
    given take the weights file's `recorded` sampler (sampler_record; its options only while the user keeps its
    sampler or mode), else the family's defaults. Steps and guidance left None mean "no record"."""
    other_family, usage = ("SiT", "--sampler ddpm|ddim") if family == "DiT" else ("DiT", "--mode ODE|SDE")
    for key in family_keys(other_family):
        value = getattr(args, key, None)
        if value is not None:
            raise UserError(f"{checks.flag(key)} {value} is a {other_family} flag, but {ckpt} holds a {family} model; "
                            f"drop it ({family} samples with {usage})")
    recorded = recorded or {}
    kind = "sampler" if family == "DiT" else "mode"
    same_sampler = getattr(args, kind) in (None, recorded.get(kind))
    for key, default in {**DIT_SAMPLER_DEFAULTS, **SIT_SAMPLER_DEFAULTS}.items():
        if getattr(args, key) is None:
            setattr(args, key, recorded[key] if same_sampler and key in recorded else default)
    for key in ("num_sampling_steps", "cfg_scale"):
        if getattr(args, key) is None:
            setattr(args, key, recorded.get(key))


DEFAULT_SAMPLING_STEPS = 250  # DiT's and SiT's


def fill_sampling_defaults(args, pictures: bool):
    """Steps and guidance that neither the caller nor the weights file gave (after use_family_flags): DiT's."""
    if args.num_sampling_steps is None:
        args.num_sampling_steps = DEFAULT_SAMPLING_STEPS
    if args.cfg_scale is None:
        args.cfg_scale = GUIDANCE_FOR_PICTURES if pictures else GUIDANCE_FOR_FID


def add_guidance_flags(parser, default=GUIDANCE_FOR_PICTURES, help="classifier-free guidance scale (1: none)"):
    parser.add_argument("--cfg-scale", type=float, default=default, help=help)


def sampler_from_args(args, family: str, process: dict):
    """sample_fn of the sampler flags for a model trained with diffusion or transport settings `process`."""
    if family == "DiT":
        return make_sampler("DiT", args.sampler, args.num_sampling_steps, ddim_eta=args.ddim_eta, **process)
    return make_sampler("SiT", args.mode, args.num_sampling_steps, sampling_method=args.sampling_method,
                        atol=args.atol, rtol=args.rtol, reverse=args.reverse, diffusion_form=args.diffusion_form,
                        diffusion_norm=args.diffusion_norm, last_step=args.last_step,
                        last_step_size=args.last_step_size, **process)


# -- training ------------------------------------------------------------------------------------------------------
def add_training_flags(parser, family: str):
    """Every flag of train_dit.py / train_sit.py."""
    default_model = f"{family}-S/2-VCA"
    data = parser.add_argument_group("data")
    data.add_argument("--data-path", default=None,
                      help="ImageFolder (ImageNet's train layout: root/<class>/<image>); without it and without "
                           "--latents, the built-in scikit-learn digits")
    data.add_argument("--latents", default=None, help="a folder made by extract_latents.py; replaces --data-path")
    data.add_argument("--image-size", type=int, default=None,
                      help=f"pixels (default: {DIGITS_IMAGE_SIZE} for the built-in digits, else {DEFAULT_IMAGE_SIZE})")
    data.add_argument("--num-classes", type=int, default=1000)
    add_vae_flags(data)
    data.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=True,
                      help="horizontal flips (DiT's augmentation); off for data that mirroring changes, e.g. digits")
    data.add_argument("--strict", action="store_true", help="stop at an unreadable image instead of skipping it")
    data.add_argument("--num-workers", type=int, default=None,
                      help=f"data loading processes, at most the CPU count (default: 0 for the built-in digits, which "
                           f"are in memory, else {DEFAULT_WORKERS})")

    model = parser.add_argument_group("model and optimisation")
    model.add_argument("--model", default=default_model, help="e.g. DiT-S/2-VCA, SiT-XL/2, SiT-Mini/4-VCA")
    model.add_argument("--class-dropout-prob", type=float, default=0.1, help="label dropout for guidance")
    model.add_argument("--global-batch-size", type=int, default=256, help="split evenly over the processes")
    model.add_argument("--grad-accum-steps", type=int, default=1,
                       help="split each process's batch into this many micro-batches (same step, less memory)")
    model.add_argument("--init-from", default=None, metavar="FILE",
                       help="start from these weights with a fresh optimizer: an export, a checkpoint folder's EMA "
                            "or an official DiT/SiT .pt (SiT's and fast-DiT's --ckpt)")
    model.add_argument("--epochs", type=int, default=None, help="stop after this many epochs (and/or --max-steps)")
    model.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    model.add_argument("--lr", type=float, default=1e-4)
    model.add_argument("--warmup-steps", type=int, default=0,
                       help="raise the learning rate linearly to --lr over this many steps (0: none, as DiT)")
    model.add_argument("--weight-decay", type=float, default=0.0)
    model.add_argument("--ema-decay", type=float, default=0.9999)
    model.add_argument("--max-grad-norm", type=float, default=None, help="clip the gradient norm (off by default)")
    model.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                       help="autocast precision (default: what `accelerate launch` was given, else no)")
    model.add_argument("--gradient-checkpointing", action="store_true", help="recompute blocks to save memory")
    model.add_argument("--compile", action="store_true", help="torch.compile the model")
    add_vca_kernels_flag(model)
    model.add_argument("--global-seed", type=int, default=0)
    if family == "DiT":
        add_diffusion_flags(parser)
    else:
        add_transport_flags(parser)

    run = parser.add_argument_group("logging, checkpoints, samples")
    run.add_argument("--results-dir", default=None, help="the run's folder (default: results/<model>)")
    run.add_argument("--resume", default=None, help="'latest' (in --results-dir) or a checkpoint folder")
    run.add_argument("--log-every", type=int, default=100)
    run.add_argument("--ckpt-every", type=int, default=50_000)
    run.add_argument("--checkpoints-total-limit", type=int, default=None, metavar="K",
                     help="keep the newest K checkpoints (older ones go once a newer one verifies)")
    run.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=None,
                     help="a tqdm bar of the steps (default: when stderr is a terminal)")
    run.add_argument("--log-with", default="auto",
                     help="Accelerate tracker: auto (tensorboard when installed), none, tensorboard, wandb, ...")
    run.add_argument("--sample-every", type=int, default=10_000, help="EMA sample grid every N steps (0: never)")
    run.add_argument("--grid-classes", type=int, nargs="+", default=None,
                     help="a grid row per class (default: all classes up to 10, else 8 spread over them)")
    run.add_argument("--grid-columns", type=int, default=8)
    run.add_argument("--final-samples", type=int, default=0,
                     help="after training, this many EMA samples (balanced over classes) into samples.npz")
    add_guidance_flags(run, help="guidance of grids, final samples and evaluations (1: none)")
    add_precision_flag(run)
    add_sampler_flags(parser, family)
    add_evaluation_flags(parser)
    return parser


def add_evaluation_flags(parser):
    """Quality measured during training (gen/training/evaluation.py)."""
    group = parser.add_argument_group("evaluation during training")
    group.add_argument("--eval-every", type=int, default=0, help="score the EMA model every N steps (0: never)")
    group.add_argument("--eval-samples", type=int, default=1000, help="images per evaluation, balanced classes")
    group.add_argument("--eval-ref", default=None, metavar="REF.npz",
                       help="reference batch (ADM layout); default for the built-in digits: the real digits")
    group.add_argument("--eval-features", choices=["auto", "inception", "digits"], default="auto",
                       help="feature network (auto: digits for the built-in digits, else inception)")
    group.add_argument("--eval-batch-size", type=int, default=250, help="images per sampling batch")


def fill_data_defaults(args) -> list[str]:
    """--image-size and --num-workers left unset take the data's defaults; more workers than CPUs are capped (torch
    warns about them, and they only wait for each other). Returns what to tell the user."""
    digits = args.data_path is None and args.latents is None
    if args.image_size is None:
        args.image_size = DIGITS_IMAGE_SIZE if digits else DEFAULT_IMAGE_SIZE
    cpus = available_cpus()
    if args.num_workers is None:
        args.num_workers = 0 if digits else min(DEFAULT_WORKERS, cpus)
    elif args.num_workers > cpus:
        note = f"--num-workers {args.num_workers} capped at the {cpus} CPUs this process may use"
        args.num_workers = cpus
        return [note]
    return []


def available_cpus() -> int:
    """The CPUs this process may run on (what torch's DataLoader compares its workers with)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_training_arguments(args, family: str):
    """Every value in range and every name known, before the VAE, the data or the model are loaded."""
    config = model_config(args.model)  # an unknown name fails here, in one line
    if config.family != family:
        other = "train_sit.py" if family == "DiT" else "train_dit.py"
        raise UserError(f"train_{family.lower()}.py trains {family} models; use {other} for --model {args.model}")
    if args.epochs is None and args.max_steps is None:
        raise UserError("give --epochs and/or --max-steps (the paper settings: --max-steps 400000)")
    checks.at_least(args, 1, "epochs", "max_steps", "log_every", "ckpt_every", "global_batch_size", "num_classes",
                    "image_size", "grid_columns", "num_sampling_steps", "grad_accum_steps",
                    "checkpoints_total_limit")
    checks.seed(args, "global_seed")
    checks.class_count(args)
    check_tracker(args.log_with)
    if args.init_from is not None:
        if args.resume is not None:
            raise UserError("--init-from starts a new run from weights, --resume continues one; give only one")
        if not os.path.exists(args.init_from):
            raise UserError(f"--init-from {args.init_from} not found; pass an export (.safetensors), a checkpoint "
                            f"folder or an official DiT/SiT .pt")
    checks.at_least(args, 0, "sample_every", "final_samples", "num_workers", "eval_every", "warmup_steps")
    checks.at_least(args, 4, "eval_samples")  # precision/recall compare 3 nearest neighbours
    checks.at_least(args, 1, "eval_batch_size")
    checks.positive(args, "lr", "max_grad_norm")
    checks.at_least(args, 0.0, "weight_decay")
    checks.within(args, "ema_decay", 0.0, 1.0)
    checks.within(args, "class_dropout_prob", 0.0, 1.0, high_open=True)
    checks.guidance_scale(args.cfg_scale)
    if family == "DiT":
        checks.at_least(args, 1, "diffusion_steps")
    if args.cfg_scale > 1 and args.class_dropout_prob <= 0:
        raise UserError("--cfg-scale > 1 needs the null class that --class-dropout-prob > 0 trains; "
                        "pass --cfg-scale 1 or a positive --class-dropout-prob")
    if args.grid_classes and any(not 0 <= c < args.num_classes for c in args.grid_classes):
        raise UserError(f"--grid-classes {args.grid_classes} must lie in [0, {args.num_classes})")
    for dest in ("data_path", "latents"):
        path = getattr(args, dest)
        if path is not None and not os.path.isdir(path):
            raise UserError(f"{checks.flag(dest)} {path} is not a folder; check the path")
    if args.resume is None:
        return
    if args.resume != "latest" and not os.path.isdir(args.resume):
        raise UserError(f"--resume {args.resume} is not a folder; pass 'latest' or a checkpoint folder "
                        f"such as RESULTS/ckpt/step-0001000")


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet_ml", "aim": "aim",
                    "mlflow": "mlflow", "clearml": "clearml", "dvclive": "dvclive"}


def check_tracker(log_with: str):
    """An Accelerate tracker that is not installed fails now, not after the first steps."""
    if log_with in ("auto", "none"):
        return
    if log_with not in TRACKER_PACKAGES:
        raise UserError(f"--log-with {log_with}: unknown tracker; use auto, none or one of {sorted(TRACKER_PACKAGES)}")
    if importlib.util.find_spec(TRACKER_PACKAGES[log_with]) is None:
        raise UserError(f"--log-with {log_with}: the {TRACKER_PACKAGES[log_with]} package is not installed; "
                        f"pip install {TRACKER_PACKAGES[log_with]}, or use --log-with tensorboard or none")
