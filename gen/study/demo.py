"""How good the demo's digits are, scored honestly: right (class accuracy, per class), like the data (the
digits FID, next to the floor of real held-out digits) and as varied as the data (per-class spread).

    python -m gen.study.demo                          # results/demo/samples.npz
    python -m gen.study.demo path/to/samples.npz

Everything comes from the digits feature network (fid.digits: a small CNN trained on the real digits in
seconds, cached). A model that draws one perfect digit per class passes the accuracy but not the FID or the
spread: the spread is the mean distance of a class's samples to their centroid in the network's features,
as a fraction of the same for the real training digits of that class.
"""
import os
import zipfile

import numpy as np

from common.cli import ArgumentParser, run_command
from common.errors import InvalidValue, MissingInput


def class_spread(features: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Per class: the mean distance of its feature vectors to their centroid."""
    return {int(c): float(np.linalg.norm(features[labels == c] - features[labels == c].mean(0), axis=1).mean())
            for c in np.unique(labels)}


def score_digits(images: np.ndarray, labels: np.ndarray) -> dict:
    """Digits FID, the floor, class accuracy overall and per class, and the spread relative to the real digits."""
    from fid.digits import DigitsFeatures, real_digits, real_digits_floor, real_digits_reference
    from fid.images import open_images
    from fid.pipeline import compute_metrics

    extractor = DigitsFeatures()
    size = images.shape[1]
    scores = compute_metrics(images, real_digits_reference(size), extractor=extractor, labels=labels,
                             num_workers=0, progress=False, kid=False)
    floor = real_digits_floor(size, extractor)
    real_images, real_labels = real_digits(size, "train")
    sample_spread = class_spread(extractor(open_images(images), progress=False)["pool"], labels)
    real_spread = class_spread(extractor(open_images(real_images), progress=False)["pool"], real_labels)
    relative = {c: sample_spread[c] / real_spread[c] for c in sample_spread}
    return {"fid": scores["fid"], "floor_fid": floor["fid"], "class_accuracy": scores["class_accuracy"],
            "per_class_accuracy": scores["class_accuracy_per_class"], "floor_accuracy": floor["class_accuracy"],
            "spread": float(np.mean(list(relative.values()))), "per_class_spread": relative}


def read_samples(path) -> tuple[np.ndarray, np.ndarray]:
    """(arr_0 images, arr_1 labels) of a samples .npz; anything else is one line naming the file."""
    how = "gen.study.demo needs arr_0 (images) and arr_1 (class labels): train with --final-samples or run sample.py"
    try:
        data = np.load(path)  # no pickles: a file that is not an .npz fails here
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InvalidValue(f"{path} is a single .npy array, not an .npz of samples; {how}")
        with data:
            missing = [key for key in ("arr_0", "arr_1") if key not in data.files]
            if missing:
                raise InvalidValue(f"{path} lacks {missing} (it holds {data.files}); {how}")
            return data["arr_0"], data["arr_1"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, InvalidValue):
            raise
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "truncated, or another format"
        raise InvalidValue(f"{path} is not a readable .npz of samples ({reason}); {how}") from None


def main(argv=None):
    parser = ArgumentParser(prog="python -m gen.study.demo", description=__doc__)
    parser.add_argument("samples", nargs="?", default="results/demo/samples.npz")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.samples):
        raise MissingInput(f"{args.samples} not found; run `make demo` (or train with --final-samples) first")
    images, labels = read_samples(args.samples)
    s = score_digits(images, labels)
    per_class = "  ".join(f"{c}: {a:.0%}" for c, a in sorted(s["per_class_accuracy"].items()))
    print(f"per class: {per_class}")
    print(f"class accuracy of the {len(labels)} samples: {s['class_accuracy']:.1%} (lowest class "
          f"{min(s['per_class_accuracy'].values()):.0%}; real held-out digits: {s['floor_accuracy']:.1%}; chance 10%)")
    print(f"digits FID: {s['fid']:.2f} (the floor, real held-out digits against the training digits: "
          f"{s['floor_fid']:.2f})")
    print(f"per-class spread: {s['spread']:.2f} of the real digits' (1.00: as varied as the data; lowest class "
          f"{min(s['per_class_spread'].values()):.2f})")
    return s


if __name__ == "__main__":
    run_command(main)
