"""The built-in demo data set: scikit-learn's handwritten digits (1,797 real 8x8 grey images, 10 classes,
shipped inside scikit-learn, so nothing is downloaded), upscaled to the training size, grey to RGB; the arrays
come from common.digits."""
import torch

from common.digits import load_digit_arrays, upscale_digits

from .images import split_key
from .transforms import horizontal_flip, to_tensor


class DigitsDataset(torch.utils.data.Dataset):
    """The digits as ([3, S, S] in [-1, 1], label), all held in memory (about 1,800 small images)."""

    def __init__(self, image_size: int = 16):
        grey, labels = load_digit_arrays()
        self.image_size = image_size
        self.images = torch.stack([to_tensor(image) for image in upscale_digits(grey, image_size)])
        self.labels = torch.from_numpy(labels)
        self.classes = [str(digit) for digit in range(10)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, key):
        index, flip = split_key(key)
        image = self.images[index]
        return horizontal_flip(image) if flip else image, int(self.labels[index])
