"""The torch side of the training images: the horizontal flip and the uint8 <-> [-1, 1] conversion (ADM's center
crop and the reading of image modes, which the FID reference shares, are common.images)."""
import numpy as np
import torch


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in [-1, 1] (DiT's ToTensor + Normalize(0.5, 0.5))."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def horizontal_flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror the last (width) axis of [..., H, W] images or latents."""
    return images.flip(-1)
