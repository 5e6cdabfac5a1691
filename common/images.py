"""Reading images as ADM does, shared by training data and the FID pipeline: the conversion of any image mode to
8-bit RGB and ADM's center crop (numpy and PIL only)."""
import numpy as np
from PIL import Image

from .errors import InvalidValue


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB. PIL's convert("RGB") clips 16-bit grey (I;16, I) to white, so those keep their
    high byte, as PIL reads 16-bit RGB; float images (F) have no fixed range and are refused."""
    if image.mode == "RGB":
        return image  # ordinary images take ADM's path untouched
    if image.mode.startswith("I"):  # I;16, I;16B, I;16L; I is what 16-bit PNG/PGM files open as in older PIL
        values = np.asarray(image).astype(np.int64)
        if values.size and not 0 <= values.min() <= values.max() <= 65535:
            raise InvalidValue(f"{image.mode} image values {values.min()}..{values.max()} are not 16-bit; "
                               f"save it as 8-bit RGB")
        return Image.fromarray((values >> 8).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        raise InvalidValue("a floating-point image (mode F) has no fixed range; save it as 8-bit RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the same colours, without PIL's warning about palette transparency
    return image.convert("RGB")


def center_crop_arr(image, image_size):
    """ADM's center crop: halve with BOX while large, resize the short side with BICUBIC, crop the middle."""
    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - image_size) // 2, (array.shape[1] - image_size) // 2
    return array[top: top + image_size, left: left + image_size]
