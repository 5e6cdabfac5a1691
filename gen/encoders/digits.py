"""The built-in digits' REPA encoder: a small CNN trained here without labels (SimCLR: two random views of each
digit, shifted, cut and noised, pulled together against the batch's other digits), in seconds on a CPU, then
cached. It is neither the digits FID network (fid/digits_network.py, trained on the labels) nor the class-accuracy
classifier, so a model aligned to it cannot learn their features and game its own scores.

Input: the images in grey at 16 x 16, in [-1, 1]. Layers: conv 3x3 1->16, SiLU, conv 3x3 stride 2 16->32, SiLU,
conv 3x3 32->32, SiLU: a 32-channel 8 x 8 feature map, average-pooled to the network's token grid (REPA's
features). Training only: its global maximum through a projection head (32 -> 32 -> 32), InfoNCE at temperature
0.2; views: turned up to 10 degrees, scaled and sheared by up to 10 %, shifted up to 2 pixels, a 4 x 4 square cut,
noise 0.05. Measured: 250 steps take about 30 s on one core; afterwards a view finds its partner among 511 far more
often than with the untrained network (tests/test_alignment.py).
"""
import hashlib
import json
import os
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from common.digits import load_digit_arrays, upscale_digits
from common.files import save_safetensors

SIDE = 16
RECIPE = {"encoder": "digits-simclr", "version": 1, "side": SIDE, "channels": [16, 32, 32], "head": [32, 32],
          "steps": 250, "batch_size": 256, "lr": 3e-3, "temperature": 0.2, "max_shift": 2, "max_angle": 10,
          "max_scale": 0.1, "max_shear": 0.1, "cut": 4, "noise": 0.05, "seed": 0}
CACHE_ENV = "VCA_GEN_CACHE"


def cache_dir() -> str:
    """$VCA_GEN_CACHE, else the user's cache folder (XDG_CACHE_HOME or ~/.cache)/vca-gen."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.environ.get(CACHE_ENV) or os.path.join(root, "vca-gen")


def weights_path() -> str:
    recipe_id = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cache_dir(), "encoders", f"digits-simclr-{recipe_id}.safetensors")


class DigitsEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        c1, c2, c3 = RECIPE["channels"]
        self.features = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.SiLU(), nn.Conv2d(c1, c2, 3, 2, padding=1),
                                      nn.SiLU(), nn.Conv2d(c2, c3, 3, padding=1))
        self.dim = c3

    def feature_map(self, images):
        """[B, 3 or 1, H, W] in [-1, 1] -> [B, 32, 8, 8], after a last SiLU."""
        grey = images.float().mean(dim=1, keepdim=True)
        if grey.shape[-1] != SIDE:
            grey = F.interpolate(grey, size=SIDE, mode="bilinear", antialias=True, align_corners=False)
        return F.silu(self.features(grey))

    def pooled(self, images):
        """One vector per image (global max of the feature map): what SimCLR trains on."""
        return self.feature_map(images).amax(dim=(2, 3))

    @torch.no_grad()
    def forward(self, images, grid: int):
        return F.adaptive_avg_pool2d(self.feature_map(images), grid).flatten(2).transpose(1, 2)

    @classmethod
    def load_or_train(cls):
        """The cached encoder of this RECIPE, else one trained now (and cached: a few seconds on a CPU)."""
        path, encoder = weights_path(), cls()
        if os.path.isfile(path):
            try:
                encoder.load_state_dict(load_file(path))
                return encoder
            except Exception as error:  # a damaged cache: training again fixes it
                warnings.warn(f"ignoring the cached digits encoder {path} ({type(error).__name__}); retraining it",
                              stacklevel=2)
        started = time.perf_counter()
        train(encoder)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_safetensors({k: v.contiguous() for k, v in encoder.state_dict().items()}, path,
                         metadata={"recipe": json.dumps(RECIPE, sort_keys=True)})
        print(f"digits encoder (REPA): trained without labels in {time.perf_counter() - started:.1f} s; cached at "
              f"{path}", file=sys.stderr)
        return encoder


def augmented(images, generator):
    """A random view: turned, scaled, sheared and shifted (an affine map), a cut x cut square blanked, noise."""
    B = images.shape[0]
    angle = (torch.rand(B, generator=generator) * 2 - 1) * RECIPE["max_angle"] * torch.pi / 180
    scale = 1 + (torch.rand(B, generator=generator) * 2 - 1) * RECIPE["max_scale"]
    shear = (torch.rand(B, generator=generator) * 2 - 1) * RECIPE["max_shear"]
    shift = (torch.rand(2, B, generator=generator) * 2 - 1) * RECIPE["max_shift"] * 2 / images.shape[-1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)
    grid = F.affine_grid(theta, images.shape, align_corners=False)
    view = F.grid_sample(images + 1, grid, align_corners=False, padding_mode="zeros") - 1  # background -1 outside
    H, W, cut = *images.shape[-2:], RECIPE["cut"]
    top, left = (corner[:, None, None] for corner in torch.randint(0, H - cut + 1, (2, B), generator=generator))
    ys, xs = torch.arange(H)[None, :, None], torch.arange(W)[None, None, :]
    inside = (ys >= top) & (ys < top + cut) & (xs >= left) & (xs < left + cut)
    view = torch.where(inside.unsqueeze(1), torch.full_like(view, -1.0), view)
    return view + RECIPE["noise"] * torch.randn(view.shape, generator=generator)


def train(encoder):
    """SimCLR on every built-in digit, deterministic on the CPU (seed 0)."""
    images, _ = load_digit_arrays()
    digits = torch.from_numpy(upscale_digits(images, SIDE)).float().mean(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    digits = digits / 127.5 - 1
    generator = torch.Generator().manual_seed(RECIPE["seed"])
    torch.manual_seed(RECIPE["seed"])
    head = nn.Sequential(nn.Linear(encoder.dim, RECIPE["head"][0]), nn.SiLU(), nn.Linear(*RECIPE["head"]))
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=RECIPE["lr"])
    for _ in range(RECIPE["steps"]):
        batch = digits[torch.randperm(len(digits), generator=generator)[: RECIPE["batch_size"]]]
        views = torch.cat([augmented(batch, generator), augmented(batch, generator)])
        embedded = F.normalize(head(encoder.pooled(views)), dim=1)
        logits = embedded @ embedded.T / RECIPE["temperature"]
        logits.fill_diagonal_(float("-inf"))  # a view is not its own positive
        partner = torch.arange(len(views)).roll(len(batch))  # view i of the first half pairs with i of the second
        loss = F.cross_entropy(logits, partner)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return encoder
