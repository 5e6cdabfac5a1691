"""scikit-learn's handwritten digits as arrays: 1,797 real 8x8 grey images in 10 classes, shipped inside
scikit-learn (nothing is downloaded), upscaled to any size as RGB and boxed back to 8x8; the training set
(gen.data.digits) and the digits feature network (fid.digits_network) read them here."""
import numpy as np
from PIL import Image

DIGITS_SIDE = 8
DIGITS_IMAGE_SIZE = 16  # twice enlarged: the size the demo, the study and the digits feature network use
DIGITS_MAX = 16  # load_digits' pixels are counts 0..16


def load_digit_arrays():
    """(uint8 [1797, 8, 8] grey in 0..255, int labels [1797])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.round(digits.images * (255.0 / DIGITS_MAX)).astype(np.uint8)
    return grey, digits.target.astype(np.int64)


def upscale_digits(grey: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [N, 8, 8] -> uint8 [N, S, S, 3] by bicubic resizing (smooth strokes, not 8x8 blocks)."""
    resized = [np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.BICUBIC)) for image in grey]
    return np.repeat(np.stack(resized)[..., None], 3, axis=-1)


def downscale_to_digits(images: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, 3] -> float [N, 64] grey features on load_digits' 0..16 scale (box filter to 8x8)."""
    grey = [np.asarray(Image.fromarray(image).convert("L").resize((DIGITS_SIDE, DIGITS_SIDE), Image.BOX))
            for image in images]
    return np.stack(grey).reshape(len(images), -1).astype(np.float64) * (DIGITS_MAX / 255.0)
