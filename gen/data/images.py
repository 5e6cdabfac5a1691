"""Image data sets for training: an ImageFolder (ImageNet's train layout) read through ADM's center crop.

Items are keyed by (index, flip) so the sampler, not the worker's RNG, decides the augmentation: the data
order and flips are then a function of (seed, epoch) alone, which makes resumption exact.
"""
import os

import numpy as np
import torch
from PIL import Image

from common.errors import InvalidValue, MissingInput, UserError
from common.images import center_crop_arr, to_rgb

from .transforms import horizontal_flip, to_tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".jpe", ".pgm")


class CorruptImageError(UserError, RuntimeError):
    pass


def split_key(key):
    """A data set key is an index or (index, flip)."""
    return (int(key[0]), bool(key[1])) if isinstance(key, (tuple, list)) else (int(key), False)


def list_image_folder(root):
    """(class names sorted, [(path, label)]) for root/<class>/**/<image>, labels by sorted folder name."""
    if not os.path.isdir(root):
        raise MissingInput(f"--data-path {root} is not a folder; expected ImageNet's layout root/<class>/<image>")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise InvalidValue(f"{root} has no class folders; expected ImageNet's layout root/<class>/<image>")
    files = []
    for label, name in enumerate(classes):
        for folder, _, names in sorted(os.walk(os.path.join(root, name), followlinks=True)):
            files += [(os.path.join(folder, n), label) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise InvalidValue(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under the class folders of {root}")
    return classes, files


class ImageFolderDataset(torch.utils.data.Dataset):
    """Class subfolders of `root` -> ([3, S, S] in [-1, 1], label); an unreadable image gives None (the
    collate function drops and counts it) or, with `strict`, an error naming the file."""

    def __init__(self, root, image_size: int, strict: bool = False):
        self.root, self.image_size, self.strict = root, image_size, strict
        self.classes, self.files = list_image_folder(root)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, key):
        index, flip = split_key(key)
        path, label = self.files[index]
        try:
            with Image.open(path) as image:
                array = center_crop_arr(to_rgb(image), self.image_size)
        except Exception as error:  # truncated file, unknown format, ...: one bad file must not end an epoch
            if self.strict:
                raise CorruptImageError(f"cannot read image {path} ({type(error).__name__}: {error}); "
                                        f"remove or replace it, or drop --strict to skip it") from None
            return SkippedImage(path)
        image = to_tensor(np.asarray(array))
        return horizontal_flip(image) if flip else image, label


class SkippedImage(str):
    """The path of an image that could not be read, in place of an item."""


def collate_skipping_unreadable(items):
    """Stack (image, label) items, dropping SkippedImage ones: (images, labels, skipped paths). An image given
    as a tuple of tensors (a latent and its REPA features) gives a tuple of stacks."""
    skipped = [item for item in items if isinstance(item, SkippedImage)]
    good = [item for item in items if not isinstance(item, SkippedImage)]
    if not good:
        return None, None, skipped
    if isinstance(good[0][0], tuple):
        images = tuple(torch.stack(parts) for parts in zip(*(image for image, _ in good), strict=True))
    else:
        images = torch.stack([image for image, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.long)
    return images, labels, skipped
