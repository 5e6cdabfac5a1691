"""Training data: image folders (ADM center crop), the built-in digits, pre-extracted VAE latents, and the
deterministic (seed, epoch) batch order."""
from common.images import center_crop_arr

from .digits import DigitsDataset
from .images import CorruptImageError, ImageFolderDataset, collate_skipping_unreadable
from .latents import LatentDataset, LatentSetError, extract_latents
from .sampler import EpochBatchSampler
from .transforms import horizontal_flip, to_tensor

__all__ = [
    "CorruptImageError", "DigitsDataset", "EpochBatchSampler", "ImageFolderDataset", "LatentDataset",
    "LatentSetError", "center_crop_arr", "collate_skipping_unreadable", "extract_latents", "horizontal_flip",
    "open_image_dataset", "to_tensor",
]


def open_image_dataset(data_path, image_size: int, strict: bool = False):
    """The ImageFolder at `data_path`, or the built-in digits when `data_path` is None."""
    if data_path is None:
        return DigitsDataset(image_size)
    return ImageFolderDataset(data_path, image_size, strict=strict)
