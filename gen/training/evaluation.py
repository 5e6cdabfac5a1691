"""Quality measured while training: every --eval-every steps the EMA model draws --eval-samples images with
the run's sampler settings, balanced classes and fixed per-image seeds (so evaluations compare across steps
and runs), spread over the processes; the FID pipeline scores them against --eval-ref and one line per
evaluation goes to log.jsonl and the trackers. The built-in digits are scored with their own feature network
against the real digits unless told otherwise; other data with Inception against an ADM reference batch.
"""
import os

import numpy as np
from accelerate.utils import gather_object

from common.errors import UserError

from ..run_log import log_path, logged_steps
from ..sampling import samples_in_memory

# What one evaluation logs: the numbers a curve or a table uses (the report keeps the rest)
LOGGED_METRICS = ("fid", "sfid", "inception_score", "precision", "recall", "class_accuracy")


def evaluation_features(args) -> str:
    """The feature network: the flag, else the digits network for the built-in digits, else Inception."""
    if args.eval_features != "auto":
        return args.eval_features
    return "digits" if args.data_path is None and args.latents is None else "inception"


def check_evaluation_arguments(args):
    """Before training: an evaluation of Inception features needs a reference file."""
    if not args.eval_every:
        return
    if evaluation_features(args) == "inception" and args.eval_ref is None:
        raise UserError("--eval-every with Inception features needs --eval-ref REF.npz (an ADM reference batch, e.g. "
                        "VIRTUAL_imagenet256_labeled.npz, or one from `python -m fid ref`)")
    if args.eval_ref is not None and not os.path.isfile(args.eval_ref):
        raise UserError(f"--eval-ref {args.eval_ref} not found; pass an ADM-layout .npz")


def evaluation_reference(args, features: str):
    """The reference the evaluations score against: --eval-ref, else the real digits at the run's size."""
    if args.eval_ref is not None:
        from fid.reference import load_reference

        return load_reference(args.eval_ref, features)
    from fid.digits import real_digits_reference

    return real_digits_reference(args.image_size)


def score_images(images, labels, reference, extractor, features: str) -> dict:
    """The logged metrics of `images` (uint8 NHWC) against `reference`, as one evaluation line holds them."""
    from fid.pipeline import compute_metrics

    result = compute_metrics(images, reference, extractor=extractor, labels=labels, progress=False, kid=False,
                             num_workers=0)
    metrics = {key: result[key] for key in LOGGED_METRICS if result.get(key) is not None}
    return {"eval_samples": len(images), "eval_features": features, **metrics}


def evaluated_steps(results_dir) -> set[int]:
    """Steps whose evaluation log.jsonl already holds (a resumed run does not repeat them)."""
    return logged_steps(log_path(results_dir), "fid")


class Evaluator:
    """Built once per run on every process: the feature network and reference on the main process only."""

    def __init__(self, run):
        self.run, args = run, run.args
        self.features = evaluation_features(args)
        self.done = evaluated_steps(run.results_dir)
        self.extractor = self.reference = None
        if run.accelerator.is_main_process:
            from fid.networks import build_extractor

            self.extractor = build_extractor(self.features, device=run.accelerator.device)
            self.reference = evaluation_reference(args, self.features)

    def due(self, step: int) -> bool:
        every = self.run.args.eval_every
        return bool(every) and step % every == 0 and step not in self.done

    def __call__(self, step: int):
        """Sample on every process, score on the main one; every process must call it."""
        run, args = self.run, self.run.args
        shares = gather_object([self.sample_share()])
        if run.accelerator.is_main_process:
            images = np.concatenate([share[0] for share in shares if share is not None])
            labels = np.concatenate([share[1] for share in shares if share is not None])
            order = np.argsort(self.indices(args.eval_samples, run.accelerator.num_processes), kind="stable")
            metrics = self.score(images[order], labels[order])
            run.log.metrics(step, {**metrics, **run.budget.record()})  # FID on the time and FLOP axes too
            self.done.add(step)
        run.accelerator.wait_for_everyone()

    @staticmethod
    def indices(count: int, world: int) -> np.ndarray:
        """The image indices in the order gather_object returns them (process 0's share first)."""
        return np.concatenate([np.arange(rank, count, world) for rank in range(world)])

    def sample_share(self):
        """This process's images i = rank, rank + world, ... of the evaluation set."""
        run, args = self.run, self.run.args
        mine = range(run.accelerator.process_index, args.eval_samples, run.accelerator.num_processes)
        if not mine:
            return None
        return samples_in_memory(run.ema, run.vae, run.sample_fn, indices=mine, latent_shape=run.shape,
                                           cfg_scale=args.cfg_scale, device=run.accelerator.device,
                                           seed=args.global_seed, batch_size=args.eval_batch_size,
                                           precision=args.precision)

    def score(self, images, labels) -> dict:
        return score_images(images, labels, self.reference, self.extractor, self.features)
