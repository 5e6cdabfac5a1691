"""Small things the tests build: models whose outputs are not trivially zero, and image folders."""
import os

import numpy as np
import torch
from PIL import Image

from gen.models import create_model


def perturbed(name, input_size=8, num_classes=10, seed=0, **options):
    """`name` with its zero-initialised output layers perturbed (not the fixed sin-cos position table), so that
    it makes non-trivial outputs and images."""
    torch.manual_seed(seed)
    model = create_model(name, input_size=input_size, num_classes=num_classes, **options)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def write_image_folder(root, classes=("cat", "ant", "bee"), per_class=4, size=(24, 20), seed=0):
    """root/<class>/<i>.png with random RGB images; returns the root."""
    rng = np.random.default_rng(seed)
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))
    return str(root)


def write_corrupt_image(root, name="cat/broken.png"):
    path = os.path.join(root, name)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\nthis is not a png")
    return path
