"""Image sources for features: uint8 arrays, `.npz` files (`arr_0`, streamed) and image folders.

Every source yields uint8 batches [B, H, W, 3]; the Inception network does the one resize to 299x299
(TF-compatible bilinear), so samples and references go through the same path.
"""

import os
import zipfile

import numpy as np
import torch
from PIL import Image

from common.images import center_crop_arr, to_rgb  # one ADM crop and one reading of image modes everywhere

from .errors import FIDError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def check_images_shape(name, dtype, shape):
    """Samples and reference images are uint8 [N, H, W, 3], as the sampler and ADM's batches store them."""
    if np.dtype(dtype) != np.uint8 or len(shape) != 4 or shape[-1] != 3:
        raise FIDError(f"{name} must be uint8 images [N, H, W, 3], got {np.dtype(dtype)} {list(shape)}")
    if shape[0] == 0:
        raise FIDError(f"{name} holds no images")


class NpzImages:
    """`arr_0` of an `.npz`, read batch by batch from the zip member so 50K images need not fit in memory."""

    def __init__(self, path, key="arr_0"):
        self.path, self.key = path, key
        with self.open_member() as member:
            self.shape, self.dtype = self.read_header(member)
        check_images_shape(f"{path}: {key}", self.dtype, self.shape)

    def open_member(self):
        try:
            archive = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as error:
            raise FIDError(f"{self.path} is not a readable .npz file ({error})") from None
        if f"{self.key}.npy" not in archive.namelist():
            archive.close()
            raise FIDError(f"{self.path} has no '{self.key}' array (keys: {npz_keys(self.path)})")
        return archive.open(f"{self.key}.npy")

    def read_header(self, member):
        version = np.lib.format.read_magic(member)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise FIDError(f"{self.path}: '{self.key}' uses .npy format {version}; save it with np.savez")
        shape, fortran_order, dtype = read[version](member)
        if fortran_order:
            raise FIDError(f"{self.path}: '{self.key}' is Fortran-ordered; save np.ascontiguousarray(images)")
        return shape, dtype

    def __len__(self):
        return self.shape[0]

    def batches(self, batch_size, num_workers=0):
        image_bytes = int(np.prod(self.shape[1:]))
        with self.open_member() as member:
            self.read_header(member)
            for start in range(0, len(self), batch_size):
                count = min(batch_size, len(self) - start)
                data = member.read(count * image_bytes)
                if len(data) != count * image_bytes:
                    raise FIDError(f"{self.path}: '{self.key}' is truncated after {start} images")
                # bytearray: a writable buffer, which torch.as_tensor wants.
                yield np.frombuffer(bytearray(data), np.uint8).reshape(count, *self.shape[1:])


def npz_keys(path):
    with zipfile.ZipFile(path) as archive:
        return sorted(name.removesuffix(".npy") for name in archive.namelist())


def npz_labels(path, key="arr_1"):
    """The class labels an `.npz` of samples carries (sample.py writes them as arr_1), else None."""
    if key not in npz_keys(path):
        return None
    with np.load(path) as arrays:
        return arrays[key]


class ArrayImages:
    """Images already in memory, e.g. straight from the sampler inside a training loop."""

    def __init__(self, images, name="samples"):
        self.images = images
        check_images_shape(name, images.dtype, images.shape)
        self.shape = images.shape

    def __len__(self):
        return len(self.images)

    def batches(self, batch_size, num_workers=0):
        for start in range(0, len(self), batch_size):
            yield np.asarray(self.images[start: start + batch_size])


class FolderImages(torch.utils.data.Dataset):
    """Every image under a folder (ImageNet train layout or flat), sorted, optionally ADM-center-cropped."""

    def __init__(self, root, image_size=None):
        self.root, self.image_size = root, image_size
        self.files = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root, followlinks=True)
                            for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
        if not self.files:
            raise FIDError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        # Errors travel back as text: the DataLoader would wrap an exception into a multi-line traceback.
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = to_rgb(image)
                crop = self.image_size is not None
                array = center_crop_arr(image, self.image_size) if crop else np.asarray(image)
            return path, np.ascontiguousarray(array), None
        except Exception as error:  # any decoding failure: truncated file, unknown format, ...
            return path, None, f"{type(error).__name__}: {error}"

    def batches(self, batch_size, num_workers=0):
        loader = torch.utils.data.DataLoader(self, batch_size, num_workers=num_workers, collate_fn=list)
        first_shape = None
        for items in loader:
            for path, array, error in items:
                if error is not None:
                    raise FIDError(f"cannot read image {path} ({error}); remove or replace the file")
                first_shape = first_shape or array.shape
                if array.shape != first_shape:
                    raise FIDError(f"{path} is {array.shape[1]}x{array.shape[0]} but {self.files[0]} is "
                                   f"{first_shape[1]}x{first_shape[0]}; images in a folder must share one "
                                   f"size (fid ref crops to --image-size)")
            yield np.stack([array for _, array, _ in items])


def open_images(source, image_size=None, name="samples"):
    """An image source from a uint8 array, an `.npz` path or a folder path; folders crop to `image_size`."""
    if isinstance(source, np.ndarray):
        return ArrayImages(source, name)
    if isinstance(source, torch.Tensor):
        return ArrayImages(source.cpu().numpy(), name)
    source = os.fspath(source)
    if os.path.isdir(source):
        return FolderImages(source, image_size)
    if not os.path.isfile(source):
        raise FIDError(f"{name} not found: {source} (expected an .npz with arr_0 or a folder of images)")
    return NpzImages(source)
