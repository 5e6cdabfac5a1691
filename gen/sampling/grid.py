"""Sample grids: a row of images per class, as DiT's and SiT's sample.py draw them, for sample.py and training."""
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from common.errors import InvalidValue
from common.files import atomic_open

from ..vae import to_uint8
from .guidance import GUIDANCE_FOR_PICTURES, generate_images
from .seeding import draw_batch

GRID_MIN_SIDE = 64  # images are enlarged (nearest neighbour) to at least this many pixels: 16-pixel digits
GRID_GAP = 2  # pixels of white between images, so that dark images on dark borders stay apart
LABEL_PADDING = 6  # pixels of white on each side of a row label


def grid_classes(num_classes: int, chosen=None) -> list[int]:
    """The classes shown, a row each: `chosen`, else all up to 10, else 8 spread evenly over the classes."""
    if chosen:
        return list(chosen)
    if num_classes <= 10:
        return list(range(num_classes))
    return np.linspace(0, num_classes - 1, 8).round().astype(int).tolist()


@torch.no_grad()
def sample_grid(model, vae, labels, sample_fn, *, latent_shape, seed=0, cfg_scale=GUIDANCE_FOR_PICTURES, device="cpu",
                stats=None, progress=False, precision="fp32"):
    """Images [N, 3, H, W] in [-1, 1] for class `labels`; grid image i draws its noise as image i of seed."""
    labels, noise, noise_sampler = draw_batch(seed, range(len(labels)), latent_shape, model.config.num_classes,
                                              labels=labels)
    return generate_images(model, vae, labels.to(device), noise.to(device), sample_fn, cfg_scale, noise_sampler,
                           stats, progress, precision)


def save_grid(images, columns: int, path: str, row_labels=None):
    """Images ([N, 3, H, W] in [-1, 1], or uint8 [N, H, W, 3]) -> one PNG of `columns` images a row; `row_labels`
    (one string per row, e.g. class names) are written at the left of their rows, in a margin added for them."""
    if torch.is_tensor(images):
        images = to_uint8(images).numpy()
    scale = max(1, GRID_MIN_SIDE // images.shape[1])
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    height = images.shape[1]
    rows = -(-len(images) // columns)
    tiles = torch.from_numpy(images).permute(0, 3, 1, 2)
    if len(tiles) == 1:  # make_grid returns a lone image as it is, without the frame
        grid = torch.nn.functional.pad(tiles[0], (GRID_GAP,) * 4, value=255)
    else:
        from torchvision.utils import make_grid  # here, not at import: torchvision costs ~2 s of every --help

        grid = make_grid(tiles, nrow=columns, padding=GRID_GAP, pad_value=255)
    grid = grid.permute(1, 2, 0).numpy()
    picture = Image.fromarray(grid)
    if row_labels is not None:
        picture = label_rows(picture, [str(label) for label in row_labels], rows, height + GRID_GAP)
    with atomic_open(path) as handle:
        picture.save(handle, format="PNG")


def label_rows(grid: Image.Image, labels: list[str], rows: int, row_pitch: int) -> Image.Image:
    """`grid` widened by a white left margin holding each row's label, centred on its row (PIL's default font)."""
    if len(labels) != rows:
        raise InvalidValue(f"{len(labels)} row labels for a grid of {rows} rows; give one label per row")
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(grid)
    margin = int(max(draw.textlength(label, font=font) for label in labels)) + 2 * LABEL_PADDING
    canvas = Image.new(grid.mode, (grid.width + margin, grid.height), "white")
    canvas.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for row, label in enumerate(labels):
        centre = GRID_GAP + row * row_pitch + (row_pitch - GRID_GAP) // 2
        draw.text((LABEL_PADDING, centre), label, fill="black", font=font, anchor="lm")
    return canvas
