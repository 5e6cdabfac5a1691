"""The digits network: a small CNN classifier of the built-in scikit-learn digits, the feature network for
data that Inception does not fit (8x8 scans shown at 16 px) and whose weights it cannot have offline.

Input: the images in grey (mean of R, G, B) at 16x16 (antialiased bilinear resize for other sizes), in
[-1, 1]. 16 px is the demo's size, so its samples are seen as they are, finer than the 8x8 scan grid: a
model's stroke artefacts count, which a box filter down to 8x8 would hide. Colour is not seen.
Layers: conv 3x3 1->16 (16x16), conv 3x3 stride 2 16->32 (8x8), conv 3x3 stride 2 32->64 (4x4), each with
SiLU (smooth: no feature is constant over a data set, as a dead ReLU would be, which makes covariances
singular); global average pool -> 64 "pool" features (FID, precision/recall, KID) -> linear -> 10 logits
(IS, class accuracy). "spatial" (sFID) is the 8x8 block's first 4 channels, channels last (256 values), as
ADM keeps the first 7 channels of a middle Inception block.

Trained deterministically on the CPU (one thread, torch's deterministic algorithms, seed 0) on a fixed
split, so one torch on one machine gives the same bits every time; cached as safetensors with a `.sha256`
file next to it, under the FID cache dir. A cache whose hash does not match is retrained with a warning.
"""

import contextlib
import hashlib
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from common.digits import load_digit_arrays, upscale_digits
from common.files import (
    atomic_open,  # the project's one atomic writer
    sha256_of_file,
)

from .cache import default_cache_dir
from .errors import FIDError
from .features import FeatureNetwork, resolve_device

INPUT_SIDE, NUM_CLASSES = 16, 10
HELD_OUT_EVERY = 5  # every fifth digit of each class is held out: 355 of 1,797, the classes balanced
RECIPE = {"network": "digits-cnn", "version": 1, "input_side": INPUT_SIDE, "channels": [16, 32, 64],
          "spatial_channels": 4, "held_out_every": HELD_OUT_EVERY, "seed": 0, "epochs": 20, "batch_size": 64,
          "optimizer": "Adam, one-cycle learning rate", "max_lr": 1e-2, "max_shift": 1}
POOL_DIM = RECIPE["channels"][-1]
SPATIAL_DIM = RECIPE["spatial_channels"] * (INPUT_SIDE // 2) ** 2
METADATA_KEY = "digits_network"  # JSON: the recipe, the held-out accuracy, the torch that trained it


class DigitsCNN(nn.Module):
    def __init__(self, channels=(16, 32, 64), spatial_channels=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(channels[1], channels[2], 3, stride=2, padding=1)
        self.classifier = nn.Linear(channels[2], NUM_CLASSES)
        self.spatial_channels = spatial_channels

    def forward(self, grey):
        """[B, 1, 16, 16] in [-1, 1] -> (pool [B, 64], logits [B, 10], spatial [B, 256])."""
        block1 = F.silu(self.conv1(grey))
        block2 = F.silu(self.conv2(block1))
        block3 = F.silu(self.conv3(block2))
        pool = block3.mean(dim=(2, 3))
        spatial = block2[:, :self.spatial_channels].permute(0, 2, 3, 1).flatten(1)
        return pool, self.classifier(pool), spatial


def network_input(images):
    """uint8 [B, H, W, 3] (numpy, or a tensor on any device) -> float [B, 1, 16, 16] grey in [-1, 1]."""
    images = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    grey = images.float().mean(dim=-1)[:, None] / 127.5 - 1
    if grey.shape[-2:] != (INPUT_SIDE, INPUT_SIDE):
        grey = F.interpolate(grey, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", antialias=True,
                             align_corners=False)
    return grey


def held_out_mask(labels):
    """True for every fifth digit of each class, in load_digits' order."""
    rank = np.zeros(len(labels), np.int64)
    for digit in np.unique(labels):
        rank[labels == digit] = np.arange(np.sum(labels == digit))
    return rank % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


def digits_split(split):
    """(uint8 grey [N, 8, 8], labels [N]) of the "train" (1,442) or "held-out" (355) digits."""
    if split not in ("train", "held-out"):
        raise FIDError(f"unknown digits split {split!r}; choose 'train' or 'held-out'")
    grey, labels = load_digit_arrays()
    chosen = held_out_mask(labels) == (split == "held-out")
    return grey[chosen], labels[chosen]


@contextlib.contextmanager
def reproducible_cpu():
    """One thread, deterministic kernels and a private RNG state (the caller's are restored after)."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)  # a sum split over threads rounds differently with another thread count
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def train_digits_cnn(recipe=RECIPE):
    """A DigitsCNN trained from scratch on the training split, the same bits on every call (same machine)."""
    grey, labels = digits_split("train")
    inputs, targets = network_input(upscale_digits(grey, INPUT_SIDE)), torch.as_tensor(labels)
    with reproducible_cpu():
        torch.manual_seed(recipe["seed"])
        generator = torch.Generator().manual_seed(recipe["seed"])
        network = DigitsCNN(recipe["channels"], recipe["spatial_channels"])
        optimizer = torch.optim.Adam(network.parameters(), recipe["max_lr"])
        total_steps = recipe["epochs"] * math.ceil(len(inputs) / recipe["batch_size"])
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe["max_lr"], total_steps=total_steps)
        shift = recipe["max_shift"]
        for _ in range(recipe["epochs"]):
            for batch in torch.randperm(len(inputs), generator=generator).split(recipe["batch_size"]):
                # Shifted by up to a pixel: generated digits are not centred as exactly as the scans.
                offsets = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist()
                logits = network(torch.roll(inputs[batch], offsets, dims=(2, 3)))[1]
                loss = F.cross_entropy(logits, targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
    return network.eval()


@torch.no_grad()
def held_out_accuracy(network):
    grey, labels = digits_split("held-out")
    logits = network(network_input(upscale_digits(grey, INPUT_SIDE)))[1]
    return float((logits.argmax(dim=1).numpy() == labels).mean())


def recipe_id():
    """12 hex digits of the recipe's hash: a changed recipe never reuses weights trained by another."""
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]


def weights_file(cache_dir):
    return os.path.join(cache_dir, f"digits-cnn-{recipe_id()}.safetensors")


def read_cached_network(path):
    """(network, sha256, held-out accuracy) from a cached file whose sha256 is its `.sha256`, else None."""
    if not os.path.isfile(path):
        return None
    try:
        with open(f"{path}.sha256") as file:
            recorded = file.read().split()[0]
        sha256 = sha256_of_file(path)
        if sha256 != recorded:
            raise ValueError(f"its sha256 is not the recorded {recorded[:12]}...")
        network = DigitsCNN(RECIPE["channels"], RECIPE["spatial_channels"])
        network.load_state_dict(safetensors.torch.load_file(path))
        with safetensors.safe_open(path, "pt") as file:
            accuracy = float(json.loads(file.metadata()[METADATA_KEY])["held_out_accuracy"])
    except Exception as error:  # missing hash, other bytes, wrong tensors: retraining fixes all of them
        reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line
        warnings.warn(f"ignoring the cached digits network {path} ({reason}); retraining it", stacklevel=3)
        return None
    return network.eval(), sha256, accuracy


def write_network(path, network, accuracy):
    """The weights (recipe and accuracy in the metadata), then their sha256; returns the sha256."""
    state = {name: tensor.contiguous() for name, tensor in network.state_dict().items()}
    # One metadata key: safetensors writes several in a random order, which would change the file's hash.
    metadata = {METADATA_KEY: json.dumps({"recipe": RECIPE, "held_out_accuracy": round(accuracy, 6),
                                          "torch": torch.__version__}, sort_keys=True)}
    data = safetensors.torch.save(state, metadata)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path) as file:
        file.write(data)
    sha256 = hashlib.sha256(data).hexdigest()
    with atomic_open(f"{path}.sha256", "w") as file:
        file.write(f"{sha256}  {os.path.basename(path)}\n")
    return sha256


def load_or_train(cache_dir=None):
    """(network, weights path, sha256, held-out accuracy): the cached network, else a fresh training."""
    path = weights_file(cache_dir or default_cache_dir())
    cached = read_cached_network(path)
    if cached is not None:
        network, sha256, accuracy = cached
        return network, path, sha256, accuracy
    started = time.perf_counter()
    network = train_digits_cnn()
    accuracy = held_out_accuracy(network)
    sha256 = write_network(path, network, accuracy)
    print(f"digits network: trained in {time.perf_counter() - started:.1f} s on the CPU, held-out accuracy "
          f"{accuracy:.2%} ({len(digits_split('held-out')[1])} digits); cached at {path}",
          file=sys.stderr)
    return network, path, sha256, accuracy


class DigitsFeatures(FeatureNetwork):
    """The digits network as a feature extractor, with InceptionFeatures' interface (build once, reuse)."""

    name = "digits"
    feature_dims = {"pool": POOL_DIM, "spatial": SPATIAL_DIM}
    num_classes = NUM_CLASSES  # its logits are the digits' class ids: samples get a class accuracy

    def __init__(self, device=None, cache_dir=None):
        self.device = resolve_device(device)
        network, self.weights_path, self.weights_sha256, self.held_out_accuracy = load_or_train(cache_dir)
        self.network = network.to(self.device)

    def description(self):
        return (f"digits-cnn (recipe {recipe_id()}, held-out accuracy {self.held_out_accuracy:.2%}): pool "
                f"{POOL_DIM} (global average of conv3), logits {NUM_CLASSES}, spatial conv2[:4] {SPATIAL_DIM}")

    @torch.no_grad()
    def batch(self, images):
        """Features of one uint8 batch [B, H, W, 3]: (pool, logits, spatial) float32 tensors on the device."""
        return tuple(output.float() for output in self.network(network_input(self.device_images(images))))
