"""The one training loop of train_dit.py and train_sit.py: DiT's train.py on Hugging Face Accelerate.

    train(SiTTrainingSettings(model="SiT-S/2-VCA", max_steps=1000),
          loss_fn=lambda model, x, y: transport.training_losses(model, x, dict(y=y))["loss"])

AdamW on the global batch split over the processes, optional mixed precision, EMA every step, gradient
clipping, checkpointing and torch.compile; logs, atomic checkpoints with exact resumption, EMA sample grids,
and the EMA weights exported as safetensors at the end. The data order is a function of (seed, epoch)
(gen/data/sampler.py) and every process's RNG is in the checkpoint, so a resumed run repeats the
uninterrupted one exactly.
"""
import contextlib
import dataclasses
import errno
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from safetensors import SafetensorError
from tqdm.auto import tqdm

from common.errors import UserError
from common.files import LOCK_FILE, ForeignFiles, check_output_folder, lock_folder, release_folder
from common.processes import decided_by_main

from ..data import EpochBatchSampler, LatentDataset, collate_skipping_unreadable, open_image_dataset
from ..data.statistics import channel_statistics
from ..encoders import load_encoder
from ..models import create_model, set_vca_kernels
from ..models.flops import forward_flops_per_image
from ..models.zoo import model_config
from ..run_log import log_path
from ..sampling import grid_classes, resolve_precision
from ..settings import TrainingSettings, checks
from ..vae import ChannelNorm, VAEUnavailableError, encode, latent_shape, load_vae, normalize, use_channel_norm
from ..weights.export import load_weights, read_settings, save_pretrained
from ..weights.model_card import write_model_card
from .alignment import AlignedLoss
from .budget import TrainingBudget
from .checkpoint import (
    CHECKPOINTS,
    RUN_RECORD,
    TRAINING_STATE,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    record_checkpoint_loss,
    recoverable_checkpoint,
    resolve_resume,
    resume_differences,
    run_files,
    save_checkpoint,
    write_json,
)
from .curves import write_curves
from .ema import create_ema, update_ema
from .evaluation import Evaluator
from .log import TrainingLog, peak_memory_gb
from .samples import write_grid, write_samples_npz
from .schedule import learning_rate, set_learning_rate


class TrainingError(UserError, RuntimeError):
    """A run that cannot go on; the message says why and what to do."""


# -- set-up --------------------------------------------------------------------------------------------------
def default_results_dir(model_name: str) -> str:
    return os.path.join("results", model_name.replace("/", "-"))


def make_accelerator(settings, results_dir) -> Accelerator:
    log_with = settings.log_with
    if log_with == "auto":
        log_with = "tensorboard" if importlib.util.find_spec("tensorboard") else None
    accelerator = Accelerator(mixed_precision=settings.mixed_precision,
                              log_with=None if log_with == "none" else log_with, project_dir=results_dir)
    pieces = accelerator.num_processes * settings.grad_accum_steps
    if settings.global_batch_size % pieces:
        raise TrainingError(f"--global-batch-size {settings.global_batch_size} is not divisible by "
                            f"{accelerator.num_processes} processes x {settings.grad_accum_steps} accumulation steps; "
                            f"use a multiple of {pieces}")
    if accelerator.device.type == "cuda":  # TF32 matmuls: DiT's setting, several times faster on A100/H100
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    settings.precision = resolve_precision(settings.precision, accelerator.device)  # of grids, samples and evaluations
    return accelerator


def open_training_data(settings, accelerator):
    """(VAE, data set, latent (channels, side), whether items are latents already); a latent folder is checked
    against its manifest before the VAE loads, so a damaged one stops at once."""
    if settings.latents is not None:
        dataset = LatentDataset(settings.latents, vae_name=settings.vae, image_size=settings.image_size,
                                enc_type=settings.enc_type)
        return load_vae(settings.vae, accelerator.device), dataset, (dataset.shape[0], dataset.shape[1]), True
    try:
        vae = load_vae(settings.vae, accelerator.device)
    except VAEUnavailableError as error:
        if not settings.digits:
            raise
        raise VAEUnavailableError(f"{error}; the built-in digits need no VAE: pass --vae none, as "
                                  f"configs/demo.yaml does") from None
    dataset = open_image_dataset(settings.data_path, settings.image_size, strict=settings.strict)
    return vae, dataset, latent_shape(vae, settings.image_size), False


def build_model(settings, shape, feature_dim=None):
    """The network to train: its output channels follow the diffusion's learned sigma (DiT); with REPA, a projector
    from block --encoder-depth to the encoder's `feature_dim` features."""
    torch.manual_seed(settings.global_seed)  # the same initial weights whatever the number of processes
    process = settings.process()
    options = {"learn_sigma": process["learn_sigma"]} if "learn_sigma" in process else {}
    if feature_dim is not None:
        options.update(repa_depth=settings.encoder_depth, repa_dim=feature_dim,
                       repa_projector_dim=settings.projector_dim)
    model = create_model(settings.model, input_size=shape[1], in_channels=shape[0], num_classes=settings.num_classes,
                         class_dropout_prob=settings.class_dropout_prob, **options, **settings.lightning_options())
    if settings.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return set_vca_kernels(model, settings.vca_kernels)


def set_latent_norm(settings, vae, dataset, from_latents, accelerator, log, resume_path=None) -> ChannelNorm | None:
    """With --latent-norm channel, the data's per-channel statistics attached to the VAE: training normalises with
    them, its samples and exports decode with them. Computed once, on the main process, and sent to the others; a
    resumed run takes the ones its checkpoint recorded, so its input space never moves."""
    if settings.latent_norm != "channel":
        return None
    norm = read_settings(resume_path).get("latent_norm") if resume_path else None
    recorded = norm is not None
    if norm is None:
        if accelerator.is_main_process:
            norm = channel_statistics(dataset, vae, from_latents=from_latents, device=accelerator.device,
                                      seed=settings.global_seed)
        norm = broadcast_object_list([norm])[0]
    if min(norm.std) <= 0:
        raise TrainingError(f"a latent channel is constant over the data (deviations {norm.std}), so it cannot be "
                            f"normalised; train with --latent-norm scalar")
    use_channel_norm(vae, norm)
    log.info("latent statistics per channel (--latent-norm channel): mean " + ", ".join(f"{v:.4f}" for v in norm.mean)
             + "; std " + ", ".join(f"{v:.4f}" for v in norm.std) + (" (the checkpoint's)" if recorded else ""))
    return norm


def aligned(settings, loss_fn, dataset, device):
    """(the loss, REPA's feature width or None): with --enc-type, the alignment added to the loss, its encoder
    loaded unless the latent set stores its features."""
    if settings.enc_type is None:
        return loss_fn, None
    stored = getattr(dataset, "features", None)
    if stored is not None:
        return AlignedLoss(loss_fn, None, settings.proj_coeff), stored["dim"]
    encoder = load_encoder(settings.enc_type, device)
    return AlignedLoss(loss_fn, encoder, settings.proj_coeff), encoder.dim


def check_feature_grid(dataset, model):
    """Stored features are of one token grid: the model's."""
    stored = getattr(dataset, "features", None)
    grid = model.x_embedder.grid_size[0]
    if stored is not None and stored["grid"] != grid:
        raise TrainingError(f"the features in {dataset.root} are of a {stored['grid']}x{stored['grid']} token grid, "
                            f"{model.name} at this size has {grid}x{grid} tokens; extract them again with "
                            f"--enc-grid {grid}")


def prepare_results_dir(settings, results_dir, accelerator, warn):
    """Create the run's folder and lock it on the main process (returns the lock, None elsewhere); a new run never
    writes into a folder where another run has trained, nor two live runs into one folder."""
    checks.writable_folder(results_dir, "--results-dir")
    lock = decided_by_main(accelerator, lambda: claim_results_dir(settings, results_dir, warn), TrainingError)
    if settings.resume is not None or not os.path.exists(log_path(results_dir)):
        return lock
    if lock is not None:
        release_folder(lock)
    found = list_checkpoints(results_dir)
    way_on = (f"continue it with --resume latest ({len(found)} checkpoints)" if found else
              "it has no checkpoint to resume: delete the folder")
    raise TrainingError(f"--results-dir {results_dir} already holds a run that trained (log.jsonl); {way_on}, "
                        f"or pass another --results-dir")


def claim_results_dir(settings, results_dir, warn):
    """The main process's lock on the run's folder; a new run writes only into an empty folder or one where a run
    started."""
    lock = lock_folder(results_dir, "--results-dir", warn)
    if settings.resume is None:
        try:
            check_output_folder(results_dir, "--results-dir", own=run_files, ignored={LOCK_FILE, "log.txt"})
        except ForeignFiles:
            release_folder(lock)
            raise
    return lock


def check_patch_grid(settings, shape, vae):
    patch = model_config(settings.model).patch_size
    if shape[1] % patch:
        factor = settings.image_size // shape[1]
        raise TrainingError(f"--image-size {settings.image_size} gives a {shape[1]}x{shape[1]} "
                            f"{'pixel' if vae is None else 'latent'} grid that the patch size {patch} of "
                            f"{settings.model} does not divide; use a multiple of {patch * factor}")


def tracker_config(settings) -> dict:
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.to_dict().items()}


# -- the loop ------------------------------------------------------------------------------------------------
@dataclass
class TrainingRun:
    """Everything the loop, checkpoints and samples use."""

    accelerator: Accelerator
    settings: TrainingSettings
    log: TrainingLog
    model: torch.nn.Module  # as trained: wrapped by Accelerate (DDP) and maybe compiled
    raw_model: torch.nn.Module  # the same parameters, unwrapped: what the EMA follows
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: EpochBatchSampler
    loader: torch.utils.data.DataLoader
    vae: torch.nn.Module | None
    from_latents: bool
    loss_fn: Callable
    sample_fn: Callable
    results_dir: str
    shape: tuple[int, int]
    record: dict  # what exports record besides the config: the VAE, the diffusion/transport and sampler settings
    evaluator: Evaluator | None = None
    budget: TrainingBudget | None = None  # seconds and FLOPs spent on steps so far, on every log row


class Window:
    """What happened since the last log line; the loss stays on the device so that steps do not sync."""

    def __init__(self, device):
        self.start = time.perf_counter()
        self.loss_sum, self.steps, self.images, self.skipped = torch.zeros((), device=device), 0, 0, 0
        self.batch_size = 0

    def add(self, loss, batch_size: int, skipped: int):
        self.loss_sum += loss.detach().float()
        self.steps, self.images, self.skipped = self.steps + 1, self.images + batch_size, self.skipped + skipped
        self.batch_size = batch_size


def check_finite(accelerator, window, step: int, results_dir, last_checked: int, dataset=None):
    """Stop every process alike when a loss since `last_checked` was NaN or infinite: blamed on the data when a
    latent shard holds NaN (no learning rate would help), else on the optimisation."""
    loss_sum = accelerator.reduce(window.loss_sum.clone(), reduction="sum")
    if torch.isfinite(loss_sum):
        return
    if isinstance(dataset, LatentDataset):
        dataset.check_finite()
    fixes = "a lower --lr, --max-grad-norm 1, or bf16 instead of fp16"
    path, loss = recoverable_checkpoint(results_dir)
    if path is not None:
        advice = (f"The newest checkpoint whose weights still gave a sane loss ({loss:.4g}) is {path}: continue "
                  f"with --resume {path} and {fixes}")
    else:
        seen = ", ".join(f"step {k}: {v:.3g}" for k, v in sorted(loss.items())) or "none recorded"
        advice = (f"No checkpoint can recover (loss given by each checkpoint's weights: {seen}); start again in a "
                  f"new --results-dir with {fixes}")
    raise TrainingError(f"the loss became {loss_sum.item()} between steps {last_checked + 1} and {step}; stopped "
                        f"without saving. {advice}")


def progress_bar(settings, accelerator, start_step: int, max_steps: int):
    """A tqdm bar of steps with rate and time left: on the main process, when stderr is a terminal (or
    --progress-bar asks for it; --no-progress-bar hides it)."""
    return tqdm(total=max_steps, initial=start_step, unit="step", desc="training", dynamic_ncols=True,
                disable=not (shows_progress(settings) and accelerator.is_main_process))


def shows_progress(settings) -> bool:
    return sys.stderr.isatty() if settings.progress_bar is None else settings.progress_bar


def log_window(accelerator, log, window, step, *, grad_norm, lr, skipped_total, device, budget):
    totals = accelerator.reduce(torch.stack([window.loss_sum.float(), torch.tensor(float(window.images), device=device),
                                             torch.tensor(float(window.skipped), device=device)]), reduction="sum")
    per_process = accelerator.gather(torch.tensor([window.batch_size], device=device)).tolist()
    seconds = time.perf_counter() - window.start
    loss = totals[0].item() / (window.steps * accelerator.num_processes)
    log.metrics(step, {
        "loss": loss,
        "steps_per_sec": window.steps / seconds,
        "images_per_sec": totals[1].item() / seconds,
        "grad_norm": float(grad_norm),
        "lr": lr,
        "peak_memory_gb": peak_memory_gb(device),
        "batch_per_process": per_process,
        "skipped_images": skipped_total + int(totals[2].item()),
        **budget.record(),
    })
    return skipped_total + int(totals[2].item()), loss


def train_steps(run, start_step: int, max_steps: int):
    """Optimiser steps from `start_step` to `max_steps`, epoch by epoch from the data position of the step."""
    accelerator, settings, log, model, optimizer = run.accelerator, run.settings, run.log, run.model, run.optimizer
    sampler, device = run.sampler, accelerator.device
    step, last_checked, skipped_total, grad_norm = start_step, start_step, 0, float("nan")
    unrated = start_step  # the checkpoint (or, at 0, the initial weights) whose loss the next batch measures
    window = Window(device)
    bar = progress_bar(settings, accelerator, start_step, max_steps)
    model.train()
    run.budget.start()
    while step < max_steps:
        epoch, batch_in_epoch = divmod(step, sampler.steps_per_epoch)
        sampler.set_position(epoch, batch_in_epoch)
        for images, labels, skipped in run.loader:
            for path in skipped:
                log.warning(f"skipped unreadable image {path} (--strict stops at it instead)")
            if images is None:
                raise TrainingError(f"every image of a batch was unreadable ({skipped[:3]}...); check --data-path")
            x, y, alignment = batch_inputs(run, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss = forward_backward(run, x, y, alignment)
            if unrated is not None:
                rate_checkpoint(run, unrated, loss)
                unrated = None
            log_now = (step + 1) % settings.log_every == 0
            if settings.max_grad_norm or log_now:  # the norm needs a pass over all gradients: only when used
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm or math.inf)
            set_learning_rate(optimizer, learning_rate(step, settings.lr, settings.warmup_steps))
            optimizer.step()
            update_ema(run.ema, run.raw_model, settings.ema_decay)
            step += 1
            window.add(loss, len(x), len(skipped))
            bar.update(1)
            run.budget.add_step(settings.global_batch_size)
            pause = (log_now or step % settings.ckpt_every == 0 or step == max_steps or sampling_due(settings, step)
                     or (run.evaluator is not None and run.evaluator.due(step)))
            if pause:  # what follows is not training: its time stays out of train_seconds
                run.budget.stop()

            if log_now:
                check_finite(accelerator, window, step, run.results_dir, last_checked, run.loader.dataset)
                skipped_total, shown = log_window(accelerator, log, window, step, grad_norm=grad_norm,
                                                  lr=optimizer.param_groups[0]["lr"], skipped_total=skipped_total,
                                                  device=device, budget=run.budget)
                bar.set_postfix(loss=f"{shown:.4f}", refresh=False)
                last_checked, window = step, Window(device)
            if step % settings.ckpt_every == 0 or step == max_steps:
                check_finite(accelerator, window, step, run.results_dir, last_checked, run.loader.dataset)
                save(run, step)
                unrated = step
            if sampling_due(settings, step):
                grid(run, os.path.join(run.results_dir, "samples", f"step-{step:07d}.png"), step)
            if run.evaluator is not None and run.evaluator.due(step):
                evaluate(run, step)
            if step >= max_steps:
                break
            if pause:
                run.budget.start()
    bar.close()
    return step


def sampling_due(settings, step: int) -> bool:
    return bool(settings.sample_every) and step % settings.sample_every == 0


def batch_inputs(run, images, labels):
    """(network input x, labels, what REPA's alignment needs: {} without it) of a loader batch on the device: the
    VAE encodes pixels (a fresh posterior sample each step, as DiT's train.py); a latent set with features gives
    them with its latents, else the alignment's encoder sees the pixels."""
    device = run.accelerator.device
    features = None
    if isinstance(images, tuple):
        images, features = images
    x, y = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    alignment = {}
    if features is not None:
        alignment = {"features": features.to(device, non_blocking=True)}
    elif isinstance(run.loss_fn, AlignedLoss):
        alignment = {"images": x}
    if not run.from_latents:
        x = encode(run.vae, x)
    return normalize(run.vae, x), y, alignment


def forward_backward(run, x, y, alignment=None):
    """The batch's mean loss (detached) and its gradients, in --grad-accum-steps micro-batches: the same
    gradients as one pass, to float rounding, with a fraction of the activation memory. `alignment`: the batch's
    pixels or features by keyword, for REPA's alignment (batch_inputs)."""
    pieces = run.settings.grad_accum_steps
    split = {name: value.tensor_split(pieces) for name, value in (alignment or {}).items()}
    total = torch.zeros((), device=x.device)
    for index, (x_piece, y_piece) in enumerate(zip(x.tensor_split(pieces), y.tensor_split(pieces), strict=True)):
        last = index == pieces - 1
        extra = {name: parts[index] for name, parts in split.items()}
        with contextlib.nullcontext() if last else run.accelerator.no_sync(run.model):  # one all-reduce a step
            loss = run.loss_fn(run.model, x_piece, y_piece, **extra).sum() / len(x)
            run.accelerator.backward(loss)
        total += loss.detach()
    return total


def rate_checkpoint(run, step: int, loss):
    """Record the loss that the weights of checkpoint `step` give, the mean over the processes."""
    value = run.accelerator.reduce(loss.detach().float().clone(), reduction="mean").item()
    if run.accelerator.is_main_process:
        os.makedirs(os.path.join(run.results_dir, CHECKPOINTS), exist_ok=True)
        record_checkpoint_loss(run.results_dir, step, value)


def save(run, step: int):
    sampler = run.sampler
    epoch, batch_in_epoch = divmod(step, sampler.steps_per_epoch)
    state = dict(epoch=epoch, batch_in_epoch=batch_in_epoch, global_batch_size=sampler.global_batch_size,
                 dataset_size=sampler.dataset_size, global_seed=run.settings.global_seed, args=run.settings.to_dict(),
                 **run.budget.record())
    try:
        path = save_checkpoint(run.accelerator, run.results_dir, step, run.ema, state, run.record)
    # torch's zip writer reports a full disk as a RuntimeError, safetensors (the first files written) as its own error
    except (OSError, RuntimeError, SafetensorError) as error:
        raise checkpoint_write_error(run.results_dir, step, error) from error
    run.log.info(f"saved checkpoint {path}")
    draw_curves(run)
    limit = run.settings.checkpoints_total_limit
    if limit and run.accelerator.is_main_process:
        for folder in prune_checkpoints(run.results_dir, path, limit, run.log.warning):
            run.log.info(f"deleted checkpoint {folder} (--checkpoints-total-limit {limit})")
    run.accelerator.wait_for_everyone()


def evaluate(run, step: int):
    start = time.perf_counter()
    run.evaluator(step)
    run.log.info(f"evaluated step {step} in {time.perf_counter() - start:.1f} s")
    draw_curves(run)


def draw_curves(run):
    """`curves.png` beside `log.jsonl`: the loss (and FID when evaluated) so far."""
    path = log_path(run.results_dir)
    if run.accelerator.is_main_process and os.path.isfile(path):
        write_curves(path, os.path.join(run.results_dir, "curves.png"))


def checkpoint_write_error(results_dir, step: int, error) -> TrainingError:
    free = shutil.disk_usage(results_dir).free
    cause = " ".join(str(error).split())[:200]
    full = getattr(error, "errno", None) == errno.ENOSPC or "(os error 28)" in str(error) or free < 2**20
    found = list_checkpoints(results_dir)
    way_on = (f"the last finished checkpoint {found[-1]} is intact. Free some space, then continue with --resume "
              f"latest" if found else "no earlier checkpoint exists, so there is nothing to resume. Free some space, "
              "then start again with another --results-dir")
    what = "no space left on the device" if full else f"writing failed ({cause})"
    return TrainingError(f"checkpoint of step {step} not saved: {what} ({free / 2**30:.2f} GiB free under "
                         f"{results_dir}); {way_on}")


def grid(run, path, step: int):
    """An EMA sample grid on the main process (a row per class), also to tensorboard; the others wait."""
    accelerator, settings = run.accelerator, run.settings
    if accelerator.is_main_process:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        classes = grid_classes(settings.num_classes, settings.grid_classes)
        start = time.perf_counter()
        write_grid(run.ema, run.vae, run.sample_fn, path, classes=classes, columns=settings.grid_columns,
                   latent_shape=run.shape, cfg_scale=settings.cfg_scale, device=accelerator.device,
                   seed=settings.global_seed, precision=settings.precision)
        run.log.image(step, "samples", path)
        run.log.info(f"saved sample grid {path} ({len(classes) * settings.grid_columns} images, "
                     f"{settings.num_sampling_steps} sampling steps, guidance {settings.cfg_scale}: "
                     f"{time.perf_counter() - start:.1f} s; --num-sampling-steps and --cfg-scale set its cost)")
    accelerator.wait_for_everyone()


def check_resume_flags(path, settings, log):
    """Refuse flags that would change what the checkpoint means; say which optimiser settings change."""
    with open(os.path.join(path, TRAINING_STATE)) as file:
        state = json.load(file)
    saved = state.get("args", {})
    if settings.max_steps is not None and state.get("step", 0) > settings.max_steps:
        raise TrainingError(past_max_steps(path, state["step"], settings.max_steps))
    refused, applied = resume_differences(saved, settings.to_dict())
    if refused:
        listed = "; ".join(f"--{k.replace('_', '-')} {now} (the run used {was})" for k, (was, now) in refused.items())
        raise TrainingError(f"--resume {path}: {listed}. Resume with the run's own values, or start a new run "
                            f"in another --results-dir")
    for key, (was, now) in applied.items():
        log.info(f"resume: --{key.replace('_', '-')} {now} applied (the run used {was})")


def past_max_steps(path, step: int, max_steps) -> str:
    return (f"--resume {path} is at step {step}, past the {max_steps} steps asked for: nothing to train, and the "
            f"export would be this checkpoint's; pass a larger --max-steps (or --epochs), or sample the checkpoint "
            f"with sample.py --ckpt {path}")


def resume(run, path) -> int:
    """Load checkpoint `path`; returns its step. The data set and global batch must be the ones it was saved with;
    the optimiser takes this run's --lr and --weight-decay."""
    settings, sampler = run.settings, run.sampler
    state = load_checkpoint(run.accelerator, path, run.ema)
    for group in run.optimizer.param_groups:
        group["lr"], group["weight_decay"] = settings.lr, settings.weight_decay
    saved = (state["dataset_size"], state["global_batch_size"])
    if saved != (sampler.dataset_size, sampler.global_batch_size):
        raise TrainingError(f"{path} was saved training on {saved[0]} items in global batches of {saved[1]}; this "
                            f"run has {sampler.dataset_size} and {sampler.global_batch_size}, so the data position "
                            f"cannot be restored. Resume with the same data and --global-batch-size")
    run.log.info(f"resumed from {path} at step {state['step']} (epoch {state['epoch']}, "
                 f"batch {state['batch_in_epoch']})")
    if "train_seconds" in state:
        run.budget.seconds = state["train_seconds"]
        run.budget.flops = state["train_flops"] if run.budget.flops is not None else None
    else:  # a checkpoint from before budgets were recorded
        run.log.warning(f"{path} records no train_seconds/train_flops: they count from this checkpoint on")
    return state["step"]


def finish(run, step: int):
    """Export the EMA weights, draw the final grid and the requested samples."""
    accelerator, settings, results_dir, log = run.accelerator, run.settings, run.results_dir, run.log
    if accelerator.is_main_process:
        path = save_pretrained(run.ema, os.path.join(results_dir, "model.safetensors"), ema=True, **run.record)
        log.info(f"exported the EMA weights of step {step} to {path}")
        write_model_card(results_dir, run.ema, "model.safetensors", run_folder=results_dir,
                         sampler=run.record["sampler"])
    grid(run, os.path.join(results_dir, "grid.png"), step)
    if settings.final_samples and accelerator.is_main_process:
        start = time.perf_counter()
        path = os.path.join(results_dir, "samples.npz")
        write_samples_npz(run.ema, run.vae, run.sample_fn, path, count=settings.final_samples,
                          latent_shape=run.shape, cfg_scale=settings.cfg_scale, device=accelerator.device,
                          seed=settings.global_seed, precision=settings.precision, progress=shows_progress(settings))
        log.info(f"wrote {settings.final_samples} samples to {path} in {time.perf_counter() - start:.1f} s")
    accelerator.wait_for_everyone()


def count_forward_flops(model, log) -> int | None:
    """Forward FLOPs per image of the model's config (once per run, on the meta device); None when the counter
    cannot trace it: the run trains and logs train_flops as null."""
    try:
        flops = forward_flops_per_image(model.config)
    except Exception as error:  # noqa: BLE001 - a missing count must not stop a training run
        log.warning(f"FLOPs not counted ({' '.join(str(error).split())[:200]}): train_flops is logged as null")
        return None
    log.info(f"forward FLOPs per image: {flops:,} (train_flops adds 3x that per image trained)")
    return flops


def train(settings: TrainingSettings, *, loss_fn):
    """Train `settings.model` with per-sample `loss_fn(model, x, y)`; grids and samples come from the settings'
    sampler; their diffusion or transport settings are recorded with the weights. The caller's settings object is
    left as it was.
    Returns the results folder."""
    settings = dataclasses.replace(settings)  # filled in and resolved below: a copy
    notes = settings.check()
    results_dir = settings.results_dir or default_results_dir(settings.model)
    accelerator = make_accelerator(settings, results_dir)
    log = TrainingLog(accelerator, results_dir)
    lock = prepare_results_dir(settings, results_dir, accelerator, log.warning)  # on every process: all stop alike
    for note in notes:
        log.info(note)
    try:
        train_in_folder(settings, accelerator, log, results_dir, loss_fn=loss_fn)
    finally:
        if lock is not None:
            release_folder(lock)
    return results_dir


def train_in_folder(settings, accelerator, log, results_dir, *, loss_fn):
    """The run itself, in a results folder that this run holds."""
    accelerator.wait_for_everyone()
    resume_path = resolve_resume(settings.resume, results_dir, warn=log.warning) if settings.resume else None
    if resume_path:
        check_resume_flags(resume_path, settings, log)
    if accelerator.is_main_process:
        write_json(os.path.join(results_dir, RUN_RECORD), settings.to_dict())

    vae, dataset, shape, from_latents = open_training_data(settings, accelerator)
    check_patch_grid(settings, shape, vae)
    latent_norm = set_latent_norm(settings, vae, dataset, from_latents, accelerator, log, resume_path)
    if len(dataset.classes) > settings.num_classes:
        raise TrainingError(f"the data has {len(dataset.classes)} classes but --num-classes is {settings.num_classes}")
    if len(dataset.classes) < settings.num_classes:  # a warning, not an error: fine-tuning on a subset is fine
        log.warning(f"the data has {len(dataset.classes)} classes but --num-classes is {settings.num_classes}: labels "
                    f"{len(dataset.classes)}..{settings.num_classes - 1} never occur in training; pass --num-classes "
                    f"{len(dataset.classes)} unless that is meant")
    sampler = EpochBatchSampler(len(dataset), settings.global_batch_size, rank=accelerator.process_index,
                                world_size=accelerator.num_processes, seed=settings.global_seed,
                                random_flip=settings.random_flip)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=settings.num_workers, collate_fn=collate_skipping_unreadable,
        pin_memory=accelerator.device.type == "cuda", persistent_workers=settings.num_workers > 0,
        generator=torch.Generator())  # its own generator: creating an epoch's iterator leaves the global RNG alone

    loss_fn, feature_dim = aligned(settings, loss_fn, dataset, accelerator.device)
    model = build_model(settings, shape, feature_dim)
    check_feature_grid(dataset, model)
    if settings.init_from:
        load_weights(model, settings.init_from)  # before the EMA copy: both start from these weights
        log.info(f"initialised {settings.model} from {settings.init_from} (fresh optimizer)")
    ema = create_ema(model).to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                  betas=(0.9, settings.adam_beta2),
                                  fused=accelerator.device.type in ("cuda", "cpu"))  # one kernel, not a loop
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    torch.manual_seed(settings.global_seed * accelerator.num_processes + accelerator.process_index)  # DiT's seeding
    if settings.compile:
        model = torch.compile(model)

    max_steps = settings.max_steps or math.inf
    if settings.epochs is not None:
        max_steps = min(max_steps, settings.epochs * sampler.steps_per_epoch)
    run = TrainingRun(accelerator, settings, log, model, raw_model, ema, optimizer, sampler, loader, vae, from_latents,
                      loss_fn, settings.sample_fn(), results_dir, shape,
                      record=dict(vae=settings.vae, process=settings.process(), sampler=settings.sampler_record(),
                                  latent_norm=latent_norm))
    run.budget = TrainingBudget(accelerator.device, count_forward_flops(raw_model, log))
    start_step = resume(run, resume_path) if resume_path else 0
    if start_step > max_steps:  # --epochs: known once the data is
        raise TrainingError(past_max_steps(resume_path, start_step, max_steps))
    if start_step == max_steps:
        log.info(f"the checkpoint is at step {start_step} = --max-steps: nothing left to train; exporting it")

    source = settings.latents or settings.data_path or "the built-in scikit-learn digits"
    log.info(f"{settings.model}: {sum(p.numel() for p in raw_model.parameters()):,} parameters, input {shape[0]}x"
             f"{shape[1]}x{shape[1]} ({'pixels' if vae is None else 'VAE ' + settings.vae + ' latents'})")
    log.info(f"data: {len(dataset):,} items of {len(dataset.classes)} classes from {source}; "
             f"{sampler.steps_per_epoch:,} steps per epoch")
    log.info(f"global batch {settings.global_batch_size} = {accelerator.num_processes} processes x "
             f"{sampler.batch_size}; "
             f"training steps {start_step} -> {max_steps} on {accelerator.device} "
             f"(mixed precision: {accelerator.mixed_precision})")
    accelerator.init_trackers("train", config=tracker_config(settings))
    run.evaluator = Evaluator(run) if settings.eval_every else None
    if run.evaluator is not None and start_step and run.evaluator.due(start_step):
        evaluate(run, start_step)  # stopped after the checkpoint, before its evaluation (trackers are ready)
    start = time.perf_counter()
    step = train_steps(run, start_step, max_steps) if start_step < max_steps else start_step
    log.info(f"trained {step - start_step} steps in {time.perf_counter() - start:.1f} s")
    finish(run, step)
    accelerator.end_training()
