"""How recognisable the demo's digits are: the share of samples that a classifier trained on real digits
assigns to the class they were conditioned on.

    python -m gen.demo                          # results/demo/samples.npz
    python -m gen.demo path/to/samples.npz

Samples (uint8 [N, H, W, 3], labels in arr_1) are box-filtered back to 8x8 grey on load_digits' 0..16
scale; the classifier (an RBF SVM) learns from real digits sent through the same upscale-downscale trip,
and its accuracy on held-out real digits is printed as the ceiling to compare with.
"""
import os

import numpy as np

from .cli import ArgumentParser, run_command
from .data.digits import downscale_to_digits, load_digit_arrays, upscale_digits
from .errors import MissingInput


def digit_classifier(image_size: int, seed: int = 0):
    """(SVM fitted on 80% of the real digits at `image_size` and back, its accuracy on the other 20%)."""
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    grey, labels = load_digit_arrays()
    features = downscale_to_digits(upscale_digits(grey, image_size))
    train_x, test_x, train_y, test_y = train_test_split(features, labels, test_size=0.2, random_state=seed,
                                                        stratify=labels)
    classifier = SVC(gamma="scale").fit(train_x, train_y)
    return classifier, float((classifier.predict(test_x) == test_y).mean())


def sample_accuracy(images: np.ndarray, labels: np.ndarray):
    """(overall accuracy, per-class accuracies, real-digit accuracy) of samples conditioned on `labels`."""
    classifier, real_accuracy = digit_classifier(images.shape[1])
    correct = classifier.predict(downscale_to_digits(images)) == labels
    per_class = {int(c): float(correct[labels == c].mean()) for c in np.unique(labels)}
    return float(correct.mean()), per_class, real_accuracy


def main(argv=None):
    parser = ArgumentParser(prog="python -m gen.demo", description=__doc__)
    parser.add_argument("samples", nargs="?", default="results/demo/samples.npz")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.samples):
        raise MissingInput(f"{args.samples} not found; run `make demo` (or train with --final-samples) first")
    with np.load(args.samples) as data:
        images, labels = data["arr_0"], data["arr_1"]
    accuracy, per_class, real_accuracy = sample_accuracy(images, labels)
    print("per class: " + "  ".join(f"{c}: {a:.0%}" for c, a in per_class.items()))
    print(f"class accuracy of the {len(labels)} samples: {accuracy:.1%} (the same classifier on held-out real "
          f"digits: {real_accuracy:.1%}; chance: {1 / len(per_class):.0%})")
    return accuracy


if __name__ == "__main__":
    run_command(main)
