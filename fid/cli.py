"""`python -m fid calc SAMPLES --ref REF` and `python -m fid ref IMAGES --out REF.npz`; `--features digits` for
the built-in digits, where the reference defaults to the real training digits."""

import os
import sys
import warnings

from common.cli import DEBUG_ENV, ArgumentParser, describe
from common.errors import UserError

from .cache import CACHE_ENV
from .digits import DIGITS_IMAGE_SIZE, real_digits, reference_like
from .errors import FIDError
from .manifold import DISTANCE_PRECISIONS
from .metrics import IS_SPLIT_RULES
from .networks import FEATURE_NETWORKS
from .pipeline import compute_metrics
from .reference import make_reference
from .report import format_table, format_timings_line, write_report
from .weights import WEIGHTS_ENV, WEIGHTS_FILENAME


def add_common_arguments(parser):
    parser.add_argument("--features", choices=sorted(FEATURE_NETWORKS), default="inception",
                        help="the feature network: torch-fidelity's Inception (ADM's numbers), or digits, a small "
                        "CNN trained on the built-in digits in seconds (no download; see docs/fid.md)")
    parser.add_argument("--cache-dir", default=None, help=f"where the reference images' features and the "
                        f"digits network are cached (default: ${CACHE_ENV}, else ~/.cache/vca-gen/fid)")
    parser.add_argument("--inception-weights", default=None, metavar="PATH",
                        help=f"local {WEIGHTS_FILENAME} (default: ${WEIGHTS_ENV}, torch's hub cache, "
                        "else a download)")
    parser.add_argument("--batch-size", type=int, default=200, help="images per Inception forward pass")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="image-decoding processes for folders")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def build_parser():
    parser = ArgumentParser(prog="python -m fid", description="FID-50K and friends, as ADM's "
                                     "evaluator scores them, on torch-fidelity's TF-compatible Inception.")
    commands = parser.add_subparsers(dest="command", required=True)
    calc = commands.add_parser("calc", help="score samples against reference statistics")
    calc.add_argument("samples", help=".npz with arr_0 uint8 [N, H, W, 3] (what sample.py writes) "
                      "or an image folder")
    calc.add_argument("--ref", default=None, help="ADM reference batch (e.g. VIRTUAL_imagenet256_labeled.npz) or "
                      "a file from `fid ref`; required but with --features digits, where the default is the "
                      "real training digits at the samples' size")
    calc.add_argument("--out-dir", default=None,
                      help="where report.json and report.md go (default: next to SAMPLES)")
    calc.add_argument("--is-splits", choices=sorted(IS_SPLIT_RULES), default="adm",
                      help="; ".join(f"{name}: {rule}" for name, rule in IS_SPLIT_RULES.items()))
    calc.add_argument("--pr-distances", choices=sorted(DISTANCE_PRECISIONS), default="float16-first",
                      help="; ".join(f"{name}: {rule}" for name, rule in DISTANCE_PRECISIONS.items()))
    add_common_arguments(calc)
    ref = commands.add_parser("ref", help="reference statistics in ADM's layout from images")
    ref.add_argument("images", nargs="?", default=None, help="image folder (e.g. ImageNet train) or .npz with "
                     "arr_0; with --features digits, the default is the real training digits")
    ref.add_argument("--out", required=True, help="the reference .npz to write")
    ref.add_argument("--image-size", type=int, default=None, help="ADM center crop for folder images (default "
                     f"256), or the size of the built-in digits (default {DIGITS_IMAGE_SIZE})")
    ref.add_argument("--num-kept", type=int, default=10000,
                     help="random images kept as arr_0 for precision/recall (ADM keeps 10000)")
    ref.add_argument("--seed", type=int, default=0, help="seed of the kept subset")
    add_common_arguments(ref)
    return parser


def run_calc(args):
    if args.ref is None and args.features != "digits":
        raise FIDError(f"--ref is required with --features {args.features} (ADM's reference batch or a file from "
                       f"`python -m fid ref`); only --features digits has a built-in reference")
    ref = args.ref or reference_like(args.samples)
    result = compute_metrics(args.samples, ref, inception_weights=args.inception_weights,
                             device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                             progress=not args.no_progress, is_split_rule=args.is_splits,
                             distance_precision=args.pr_distances, cache_dir=args.cache_dir,
                             features=args.features)
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(os.path.normpath(args.samples)))
    json_path, md_path = write_report(result, out_dir)
    print(format_table(result, stages=False))
    print(f"wrote {json_path} and {md_path}")
    print(format_timings_line(result))


def run_ref(args):
    if args.images is None and args.features != "digits":
        raise FIDError("give IMAGES (an image folder or .npz), or --features digits for the built-in digits")
    images = args.images if args.images is not None else real_digits(args.image_size or DIGITS_IMAGE_SIZE)[0]
    written = make_reference(images, args.out, image_size=args.image_size or 256, num_kept=args.num_kept,
                             seed=args.seed, inception_weights=args.inception_weights, device=args.device,
                             batch_size=args.batch_size, num_workers=args.num_workers,
                             progress=not args.no_progress, features=args.features, cache_dir=args.cache_dir)
    print(f"wrote {written['reference']}: statistics of {written['num_images']} images, "
          f"{written['num_kept']} kept as arr_0")


def print_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line, like errors: no source location, no quoted code."""
    print(f"fid: warning: {message}", file=sys.stderr)


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
    except UserError as error:
        print(f"fid: error: {error}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = print_warning  # restored on exit by catch_warnings
            {"calc": run_calc, "ref": run_ref}[args.command](args)
    except (UserError, OSError) as error:
        if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"fid {args.command}: error: {describe(error)}", file=sys.stderr)
        return 2
    return 0
