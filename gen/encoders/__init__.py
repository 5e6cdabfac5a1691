"""Frozen encoders whose patch features REPA aligns a network's hidden states with (gen.training.alignment):

    encoder = load_encoder("dinov2-vit-b", device)   # DINOv2 ViT-B/14 through timm: the hub cache, else a download
    encoder = load_encoder("path/to/folder", device) # a timm model saved there (timm's save_for_hf)
    encoder = load_encoder("digits", device)         # the built-in digits' own encoder, trained here without labels
    features = encoder(images, grid)                 # images [B, 3, H, W] in [-1, 1] -> [B, grid*grid, encoder.dim]

Every encoder gives one feature vector per token of the network's `grid` x `grid` token grid: a ViT sees the
images resized to grid x its patch size (REPA: 256 px images, 16 x 16 tokens, DINOv2 at 224 px), the digits
encoder pools its feature map to the grid.
"""
import os

from common.errors import UserError

from .digits import DigitsEncoder
from .vit import TIMM_NAMES, TimmEncoder

ENC_TYPES = ("digits", *TIMM_NAMES)  # besides a local folder of a timm model


def check_enc_type(enc_type: str):
    """A name load_encoder knows or a folder; else the one-line error, before anything is loaded."""
    if enc_type not in ENC_TYPES and not os.path.isdir(enc_type):
        raise UserError(f"--enc-type {enc_type!r} is neither one of {list(ENC_TYPES)} nor a folder holding a timm "
                        f"model; pick one of those")


def load_encoder(enc_type: str, device="cpu"):
    """The frozen encoder `enc_type` (one of ENC_TYPES or a local folder) in eval mode on `device`."""
    check_enc_type(enc_type)
    if enc_type == "digits":
        return DigitsEncoder.load_or_train().to(device).eval().requires_grad_(False)
    return TimmEncoder.load(enc_type).to(device).eval().requires_grad_(False)


__all__ = ["ENC_TYPES", "DigitsEncoder", "TimmEncoder", "check_enc_type", "load_encoder"]
