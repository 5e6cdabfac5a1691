"""Pretrained ViTs through timm as REPA's encoders: DINOv2 by REPA's names, or any timm model saved in a folder
(timm's save_for_hf), which is how a machine without network gets one, and how the tests make a small random one."""
import os

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError

# REPA's --enc-type names of the DINOv2 encoders, as timm names them (REPA loads them from torch hub)
TIMM_NAMES = {"dinov2-vit-s": "vit_small_patch14_dinov2.lvd142m", "dinov2-vit-b": "vit_base_patch14_dinov2.lvd142m",
              "dinov2-vit-l": "vit_large_patch14_dinov2.lvd142m", "dinov2-vit-g": "vit_giant_patch14_dinov2.lvd142m"}


class TimmEncoder(nn.Module):
    """A timm ViT's normalised patch tokens (its prefix tokens dropped, as DINOv2's x_norm_patchtokens)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.dim = model.embed_dim
        self.patch = model.patch_embed.patch_size[0]
        config = model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))

    @classmethod
    def load(cls, enc_type: str):
        try:
            import timm
        except ImportError:
            raise UserError("REPA's ViT encoders come through timm, which is not installed: pip install timm") from None
        name = f"local-dir:{enc_type}" if os.path.isdir(enc_type) else TIMM_NAMES[enc_type]
        try:  # dynamic_img_size: the position table is resampled to whatever grid the images give
            return cls(timm.create_model(name, pretrained=True, dynamic_img_size=True))
        except Exception as error:  # offline, not in the hub cache, or a folder of something else
            reason = " ".join(str(error).split())[:200]
            raise UserError(f"cannot load the encoder {enc_type!r} ({type(error).__name__}: {reason}); without network "
                            f"save it on a machine with one (timm.create_model('{name}', pretrained=True) and "
                            f"timm.models.save_for_hf(model, FOLDER)) and pass --enc-type FOLDER") from None

    @torch.no_grad()
    def forward(self, images, grid: int):
        pixels = F.interpolate((images.float() + 1) / 2, size=grid * self.patch, mode="bicubic", align_corners=False)
        tokens = self.model.forward_features((pixels - self.mean) / self.std)
        return tokens[:, self.model.num_prefix_tokens:]
