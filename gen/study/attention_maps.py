"""What a VCA model attends to, drawn over a sample it generates (docs/sampling.md, "Pictures").

    python -m gen.study.attention_maps --ckpt results/demo/model.safetensors --class-label 3 --out maps.png

The model draws one image of the class with its own settings (the weights file's VAE and diffusion or transport
settings; the sampler flags are sample.py's). That image is noised again, with the noise it started from, to
`--step-fraction` of the way from noise to data (DiT: diffusion timestep round((1 - f) (T - 1)); SiT: t = f, since
SiT's t = 1 is data), and the network runs once on it, conditioned on the class without guidance. A forward hook
on each VCA block runs VCA's reference path, the one that returns the maps, so the model code is not changed:
stage I, each of the 2n contrast tokens (T+ and T- streams) over the N keys of the token grid; stage II, each
query over the 2n contrast tokens, which lie on the pooled grid. The picture shows one block, a row per head.

    result = sample_attention_maps(model, vae, process, sample_fn, class_label=3)   # for the study report
    draw_attention_maps(result, "maps.png")
"""
import contextlib

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from common.cli import ArgumentParser, parse_with_config, run_command
from common.errors import UserError

from ..family import family_of
from ..models.vca import VisualContrastAttention
from ..sampling import GUIDANCE_FOR_PICTURES, draw_batch, generate_latents
from ..settings import SamplingSettings, checks
from ..settings.flags import add_sampling_flags
from ..training.curves import save_figure
from ..vae import decode
from ..weights.loading import prepare_sampling

SHOWN_TOKENS = 4  # contrast tokens drawn per head in stage I, spread over the pooled grid
OVERLAY_ALPHA = 0.6  # the map over the greyscale sample: both stay readable
COLORMAP = "inferno"
COLOUR_BAR_WIDTH = 0.08  # of a panel's width
BAR_TICKS_GAP = 0.45  # room for a colour bar's ticks and label before the next panel


# -- capturing ------------------------------------------------------------------------------------------------------
def vca_blocks(model) -> list[int]:
    """Indices of the blocks whose attention is VCA; a model without any is a UserError."""
    blocks = [i for i, block in enumerate(model.blocks) if isinstance(block.attn, VisualContrastAttention)]
    if not blocks:
        raise UserError(f"{model.name} has no Visual-Contrast Attention, so it has no VCA maps to draw; pass a "
                        f"-VCA model such as {model.name.removesuffix('-VCA')}-VCA")
    return blocks


@contextlib.contextmanager
def captured_vca_maps(model, blocks):
    """{block index: maps} filled by each forward of `model`; each VCA block answers through its reference path
    (equal to the fast path to float32 rounding), which also returns the maps."""
    captured = {}

    def hook_for(index):
        def hook(module, inputs, output):
            out, captured[index] = module.reference_forward(inputs[0], return_attention_maps=True)
            return out
        return hook

    handles = [model.blocks[i].attn.register_forward_hook(hook_for(i)) for i in blocks]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def attention_maps(model, x, t, labels, blocks=None) -> dict[int, dict[str, torch.Tensor]]:
    """One forward of `model` on (x, t, labels): {block: {"stage1": [B, h, 2n, N], "stage2": [B, h, N, 2n]}}
    (float32, CPU). Stage I rows are the contrast tokens, T+ first then T-, each a softmax over the N keys;
    stage II rows are the queries, over [T+; T-] (one joint softmax, or one per stream with "separate")."""
    blocks = vca_blocks(model) if blocks is None else list(blocks)
    with captured_vca_maps(model, blocks) as captured:
        model(x, t, labels)
    return {i: {k: v.float().cpu() for k, v in captured[i].items()} for i in blocks}


# -- the sample and the noised input --------------------------------------------------------------------------------
def noised_input(model, latents, noise, step_fraction: float, process: dict):
    """(x_t, t): `latents` noised with `noise` to `step_fraction` of the way from noise (0) to data (1)."""
    return family_of(model).noised(process, latents, noise, step_fraction)


@torch.no_grad()
def sample_attention_maps(model, vae, process, sample_fn, class_label: int, *, seed=0, cfg_scale=GUIDANCE_FOR_PICTURES,
                          step_fraction=0.5, device="cpu") -> dict:
    """One sample of `class_label` (image 0 of `seed`, as sample.py's grids) and the maps of every VCA block on
    it: {"image", "noised_image" ([3, H, W] in [-1, 1]), "maps" (attention_maps), "timestep", "class_label",
    "step_fraction", "grid_size", "pool_size", "model"}."""
    config = model.config
    blocks = vca_blocks(model)
    labels, noise, noise_sampler = draw_batch(seed, [0], (config.in_channels, config.input_size),
                                              config.num_classes, labels=[class_label])
    labels, noise = labels.to(device), noise.to(device)
    latents = generate_latents(model, labels, noise, sample_fn, cfg_scale, noise_sampler)
    x_t, t = noised_input(model, latents, noise, step_fraction, process)
    attention = model.blocks[blocks[0]].attn
    return {
        "image": decode(vae, latents).clamp(-1, 1)[0].float().cpu(),
        "noised_image": decode(vae, x_t).clamp(-1, 1)[0].float().cpu(),
        "maps": attention_maps(model, x_t, t, labels, blocks),
        "timestep": float(t[0]), "class_label": int(class_label), "step_fraction": float(step_fraction),
        "grid_size": attention.grid_size, "pool_size": attention.pool_size, "model": model.name,
    }


# -- the picture ----------------------------------------------------------------------------------------------------
def default_block(result: dict) -> int:
    """The middle VCA block: early blocks attend locally, the last ones to what the output layer needs."""
    blocks = sorted(result["maps"])
    return blocks[len(blocks) // 2]


def check_block(block: int, blocks: list[int], model_name: str) -> int:
    if block not in blocks:
        raise UserError(f"--block {block} is not a VCA block of {model_name}; choose one of {blocks}")
    return block


def attention_figure(result: dict, block: int | None = None, tokens: int = SHOWN_TOKENS) -> Figure:
    """Top row: the sample and the network's input; then a row per head: stage I of `tokens` contrast tokens
    (T+ and T- over the token grid, the token's pooled cell boxed), and stage II (A+ and A- over the pooled grid,
    averaged over queries and for the centre query, marked x), all over the sample in grey, with a colour bar per
    head and stage."""
    block = default_block(result) if block is None else check_block(block, sorted(result["maps"]), result["model"])
    stage1, stage2 = result["maps"][block]["stage1"][0], result["maps"][block]["stage2"][0]
    (rows, columns), (pool_rows, pool_columns) = result["grid_size"], result["pool_size"]
    heads, num_contrast = stage1.shape[0], stage1.shape[1] // 2
    shown = sorted(set(np.linspace(0, num_contrast - 1, min(tokens, num_contrast)).round().astype(int).tolist()))
    query = (rows // 2) * columns + columns // 2
    first = 2 * len(shown)  # stage I's panels; then its colour bar, a gap for the bar's ticks, stage II's 4, its bar
    columns_of = {"I": list(range(first)), "I bar": first, "II": list(range(first + 2, first + 6)), "II bar": first + 6}
    ratios = [1.0] * first + [COLOUR_BAR_WIDTH, BAR_TICKS_GAP] + [1.0] * 4 + [COLOUR_BAR_WIDTH]
    figure = Figure(figsize=(1.45 * (first + 4) + 1.3, 1.55 * (heads + 1) + 0.4), dpi=100)
    # fixed margins, not a constrained layout: that shrank whichever panels sat beside a label or a colour bar
    grid = figure.add_gridspec(heads + 1, len(ratios), width_ratios=ratios, left=0.05, right=0.93, bottom=0.03,
                               top=0.93, wspace=0.12, hspace=0.3)
    image = (result["image"].numpy().transpose(1, 2, 0) + 1) / 2
    grey = image.mean(axis=2)
    cell = (image.shape[1] / pool_columns, image.shape[0] / pool_rows)
    query_xy = ((columns // 2 + 0.5) * image.shape[1] / columns, (rows // 2 + 0.5) * image.shape[0] / rows)

    _picture(figure.add_subplot(grid[0, 0]), image, f"sample conditioned\non class {result['class_label']}")
    noised = (result["noised_image"].numpy().transpose(1, 2, 0) + 1) / 2
    _picture(figure.add_subplot(grid[0, 1]), noised.clip(0, 1), f"input, t={result['timestep']:g}")
    notes = figure.add_subplot(grid[0, 2:])
    notes.axis("off")
    notes.text(0, 0.5, _caption(result, block, heads), va="center", fontsize=9, transform=notes.transAxes)
    for head in range(heads):
        row = [figure.add_subplot(grid[head + 1, i]) for i in columns_of["I"] + columns_of["II"]]
        stage1_maps = [stage1[head, stream * num_contrast + token].view(rows, columns) for token in shown
                       for stream in (0, 1)]
        stage2_panels = (("A+ mean", stage2[head, :, :num_contrast].mean(0)),
                         ("A- mean", stage2[head, :, num_contrast:].mean(0)),
                         ("A+ at x", stage2[head, query, :num_contrast]),
                         ("A- at x", stage2[head, query, num_contrast:]))
        vmax = _shared_max(stage1_maps)  # one scale per head and stage, so T+ and T- compare
        for i, (axes, values) in enumerate(zip(row[: 2 * len(shown)], stage1_maps, strict=True)):
            token, stream = shown[i // 2], i % 2
            box = ((token % pool_columns) * cell[0], (token // pool_columns) * cell[1])
            shade = _overlay(axes, grey, values, f"I: T{'+-'[stream]} {token}" if head == 0 else None, vmax)
            axes.add_patch(Rectangle(box, *cell, fill=False, edgecolor="cyan", linewidth=1.2))
        colour_bar(figure, shade, grid[head + 1, columns_of["I bar"]], "I weight")
        vmax = _shared_max([values for _, values in stage2_panels])
        for axes, (name, values) in zip(row[2 * len(shown) :], stage2_panels, strict=True):
            shade = _overlay(axes, grey, values.view(pool_rows, pool_columns), f"II: {name}" if head == 0 else None,
                             vmax)
            if name.endswith("at x"):
                axes.plot(*query_xy, marker="x", color="cyan", markersize=7, mew=2)
        colour_bar(figure, shade, grid[head + 1, columns_of["II bar"]], "II weight")
        row[0].set_ylabel(f"head {head}")
    return figure


def colour_bar(figure, shade, cell, label: str):
    """A colour bar in its own grid cell (labelled "<colorbar>", as matplotlib labels the ones it places)."""
    axes = figure.add_subplot(cell, label="<colorbar>")
    figure.colorbar(shade, cax=axes, label=label)


def draw_attention_maps(result: dict, out_png, *, block: int | None = None, tokens: int = SHOWN_TOKENS) -> str:
    """The PNG of attention_figure for `result` (sample_attention_maps)."""
    return save_figure(attention_figure(result, block, tokens), out_png)


def _caption(result, block, heads) -> str:
    (rows, columns), (pool_rows, pool_columns) = result["grid_size"], result["pool_size"]
    return (f"{result['model']}, block {block} of VCA blocks {sorted(result['maps'])}, {heads} heads; input "
            f"{result['step_fraction']:g} of the way from noise to the sample\n"
            f"I: contrast token k of stream T+ / T- over the {rows}x{columns} token grid (box: its pooled cell)\n"
            f"II: queries' weights on the {pool_rows}x{pool_columns} pooled grid of contrast tokens, mean over "
            f"queries and at query x\ncolour: attention weight from 0, one scale per head and stage (colour bars), "
            f"over the sample in grey; the sample was conditioned on class {result['class_label']}, which it may "
            f"not show")


def _picture(axes, image, title):
    axes.imshow(image, interpolation="nearest")
    axes.set_title(title, fontsize=8)
    axes.set_xticks([])
    axes.set_yticks([])


def _shared_max(maps) -> float:
    return max(max(float(values.max()) for values in maps), 1e-12)


def _overlay(axes, grey, values, title, vmax):
    """The map over the sample in grey; returns the map's image (for a colour bar)."""
    extent = (0, grey.shape[1], grey.shape[0], 0)  # the map's cells stretched over the image's pixels
    axes.imshow(grey, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    shade = axes.imshow(values.numpy(), cmap=COLORMAP, vmin=0, vmax=vmax, alpha=OVERLAY_ALPHA, extent=extent,
                        interpolation="nearest")
    if title:
        axes.set_title(title, fontsize=8)
    axes.set_xticks([])
    axes.set_yticks([])
    return shade


# -- the command line -----------------------------------------------------------------------------------------------
def build_parser():
    parser = ArgumentParser(prog="python -m gen.study.attention_maps", description=__doc__)
    parser.add_argument("--ckpt", required=True,
                        help="a VCA model: an exported .safetensors or a training checkpoint folder")
    parser.add_argument("--class-label", type=int, required=True)
    parser.add_argument("--out", default="attention_maps.png", help="the PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="the sample is image 0 of this seed (as sample.py's)")
    parser.add_argument("--step-fraction", type=float, default=0.5,
                        help="how far from noise (0) to the sample (1) the network's input is")
    parser.add_argument("--block", type=int, default=None, help="the block drawn (default: the middle VCA block)")
    parser.add_argument("--tokens", type=int, default=SHOWN_TOKENS, help="contrast tokens drawn per head")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser = add_sampling_flags(parser, keep=("num_sampling_steps", "cfg_scale"))
    parser.set_defaults(num_sampling_steps=None, cfg_scale=None)  # unset: the file's record, as sample.py
    return parser


def check_model(model, args):
    """A VCA model with the block and class asked for: an MHSA model fails here, before anything is sampled."""
    blocks = vca_blocks(model)
    if args.block is not None:
        check_block(args.block, blocks, model.name)
    if not 0 <= args.class_label < model.config.num_classes:
        raise UserError(f"--class-label {args.class_label} must lie in [0, {model.config.num_classes}) for "
                        f"{model.name}")


def main(argv=None):
    args = parse_with_config(build_parser(), argv)
    checks.within(args, "step_fraction", 0.0, 1.0)
    checks.at_least(args, 1, "tokens")
    checks.seed(args, "seed")
    SamplingSettings.validate(args)  # as sample.py's
    checks.writable_file(args.out, "--out")
    sampling = prepare_sampling(args.ckpt, args.device, args, pictures=True,  # as sample.py
                                check_model=lambda model: check_model(model, args))
    weights = sampling.weights
    result = sample_attention_maps(weights.model, weights.vae, weights.process, sampling.sample_fn, args.class_label,
                                   seed=args.seed,
                                   cfg_scale=args.cfg_scale, step_fraction=args.step_fraction, device=args.device)
    print(f"wrote {draw_attention_maps(result, args.out, block=args.block, tokens=args.tokens)}")


if __name__ == "__main__":
    run_command(main)
