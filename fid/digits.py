"""Scoring models of the built-in digits: the digits network's features, the real digits as a reference, and
the floor (real held-out digits against the training digits), for `fid calc --features digits` and training.

    extractor = DigitsFeatures(device)                # cached, else trained in seconds on the CPU
    reference = real_digits_reference(image_size=16)  # the training digits; their features cached on disk
    scores = compute_metrics(samples, reference, extractor=extractor, labels=labels)
    scores["fid"], scores["class_accuracy"], scores["class_accuracy_per_class"]
"""

import hashlib

from common.digits import DIGITS_IMAGE_SIZE, upscale_digits

from .digits_network import DigitsFeatures, digits_split
from .errors import FIDError
from .images import open_images
from .pipeline import compute_metrics
from .reference import Reference

__all__ = ["DigitsFeatures", "real_digits", "real_digits_floor", "real_digits_reference", "reference_like"]


def real_digits(image_size=DIGITS_IMAGE_SIZE, split="train"):
    """(uint8 [N, S, S, 3], labels [N]) of the "train" or "held-out" digits, upscaled as the training data are."""
    grey, labels = digits_split(split)
    return upscale_digits(grey, image_size), labels


def real_digits_reference(image_size=DIGITS_IMAGE_SIZE, split="train"):
    """A Reference of the real digits at `image_size` (their statistics come from their features, cached on
    disk under the hash of the images), usable as `compute_metrics(..., ref=...)`."""
    images, _ = real_digits(image_size, split)
    digest = hashlib.sha256(f"digits {split} {images.shape}".encode() + images.tobytes()).hexdigest()
    source = open_images(images, name=f"real digits ({split})")
    return Reference(path=f"built-in digits, {split} split ({len(images)} images, {image_size}x{image_size})",
                     sha256=digest, images=source)


def reference_like(samples):
    """The training digits' reference at the size of `samples` (a path or uint8 array of square images)."""
    first = next(iter(open_images(samples, name="samples").batches(1)))
    height, width = first.shape[1:3]
    if height != width:
        raise FIDError(f"samples are {width}x{height} but the built-in digits are square; pass --ref REF.npz "
                       f"(`python -m fid ref IMAGES --features digits`)")
    return real_digits_reference(height)


def real_digits_floor(image_size=DIGITS_IMAGE_SIZE, extractor=None, device=None, cache_dir=None, progress=False):
    """The metrics of the 355 real held-out digits against the 1,442 training digits: the best a model can
    expect at this sample count (a model that copies the training digits does better, on FID alone)."""
    images, labels = real_digits(image_size, "held-out")
    extractor = extractor or DigitsFeatures(device, cache_dir)
    return compute_metrics(images, real_digits_reference(image_size), extractor=extractor, labels=labels,
                           num_workers=0, progress=progress, cache_dir=cache_dir)

