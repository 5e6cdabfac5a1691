"""Image transforms shared by training, latent extraction and the FID reference: ADM's center crop,
the horizontal flip and the uint8 <-> [-1, 1] conversion."""
import numpy as np
import torch
from PIL import Image


def center_crop_arr(image, image_size):
    """ADM's center crop: halve with BOX while large, resize the short side with BICUBIC, crop the middle."""
    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - image_size) // 2, (array.shape[1] - image_size) // 2
    return array[top: top + image_size, left: left + image_size]


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in [-1, 1] (DiT's ToTensor + Normalize(0.5, 0.5))."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def horizontal_flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror the last (width) axis of [..., H, W] images or latents."""
    return images.flip(-1)
