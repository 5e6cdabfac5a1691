"""The adaLN-Zero transformer backbone shared by DiT and SiT (Peebles & Xie 2023; Ma et al. 2024).

Sections follow the data flow: embedders, position embedding, block, final layer, the network.
The attention of every block is MHSA or VCA; everything else matches the official DiT/SiT models.py,
so official checkpoints load unchanged (see convert.py).
"""
import dataclasses
import math

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention
from .config import ModelConfig
from .lightning import SwiGLU, block_norm, query_key_transform
from .vca import VisualContrastAttention


def modulate(x, shift, scale):
    """x * (1 + scale) + shift, per sample: one fused pass over the tokens (addcmul) instead of two."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


def gated_residual(x, gate, branch):
    """x + gate * branch, per sample, in one fused pass."""
    return torch.addcmul(x, gate.unsqueeze(1), branch)


# -- embedders -----------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Image [B, C, H, W] -> tokens [B, (H/p)(W/p), hidden] by a strided convolution (timm's PatchEmbed)."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by patch size {patch_size}")
        self.grid_size = (input_size // patch_size, input_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> vectors: sinusoidal frequencies, then a two-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim: int, max_period: int = 10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; the extra row `num_classes` is the null class that classifier-free guidance uses."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels, force_drop_ids=None):
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels, train: bool, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


# -- fixed 2-D sin-cos position embedding (MAE / DiT) -------------------------------------------------------
def get_1d_sincos_pos_embed(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.einsum("m,d->md", positions.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """[grid_size**2, embed_dim]; the first half of the channels encodes the column, the second the row."""
    coords = np.arange(grid_size, dtype=np.float32)
    grid_w, grid_h = np.meshgrid(coords, coords)  # DiT passes (w, h) to meshgrid and encodes w first
    emb_first = get_1d_sincos_pos_embed(embed_dim // 2, grid_w)
    emb_second = get_1d_sincos_pos_embed(embed_dim // 2, grid_h)
    return np.concatenate([emb_first, emb_second], axis=1)


# -- blocks --------------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    def __init__(self, hidden_size: int, mlp_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """Attention and MLP, each modulated (shift, scale) and gated by the conditioning: adaLN-Zero. `rmsnorm` and
    `swiglu`: LightningDiT's norms and MLP instead of DiT's."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, attn: nn.Module, *, rmsnorm=False,
                 swiglu=False):
        super().__init__()
        self.norm1 = block_norm(hidden_size, rmsnorm)
        self.attn = attn
        self.norm2 = block_norm(hidden_size, rmsnorm)
        self.mlp = (SwiGLU if swiglu else Mlp)(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = gated_residual(x, gate_msa, self.attn(modulate(self.norm1(x), shift_msa, scale_msa)))
        return gated_residual(x, gate_mlp, self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, rmsnorm: bool = False):
        super().__init__()
        self.norm_final = block_norm(hidden_size, rmsnorm)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# -- the network ---------------------------------------------------------------------------------------------
class DiT(nn.Module):
    """Diffusion transformer: forward(x, t, y) -> eps (and the variance values when learn_sigma).
    `self.config` (ModelConfig) records every argument, so any instance exports and rebuilds."""

    family = "DiT"

    def __init__(self, config: ModelConfig | None = None, **fields):
        """DiT(config) (nanoGPT's habit), or DiT(depth=..., ...) with ModelConfig's fields as the official code
        takes them (defaults: DiT-XL/2 at ImageNet 256)."""
        super().__init__()
        if config is None:
            config = ModelConfig(family=self.family, **fields)
        elif fields:
            raise TypeError(f"{type(self).__name__}() takes a ModelConfig or its fields as keywords, not both")
        if config.family != self.family:
            raise ValueError(f"a {config.family} config cannot build a {self.family}; use gen.models.build_model")
        if config.attention not in ("mhsa", "vca"):
            raise ValueError(f"attention must be 'mhsa' or 'vca', got {config.attention!r}")
        self.config = c = dataclasses.replace(config)  # its own: a caller's later edit changes no built model
        self.learn_sigma = c.learn_sigma
        self.in_channels = c.in_channels
        self.out_channels = c.in_channels * 2 if c.learn_sigma else c.in_channels
        self.patch_size = c.patch_size
        self.num_heads = c.num_heads
        self.cfg_channels = c.cfg_channels  # 3: the official code's choice, kept for reproducibility; None: all
        self.gradient_checkpointing = False

        self.x_embedder = PatchEmbed(c.input_size, c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size)
        self.y_embedder = LabelEmbedder(c.num_classes, c.hidden_size, c.class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, c.hidden_size), requires_grad=False)

        def make_attention(layer_index):
            query_key = query_key_transform(c, c.hidden_size // c.num_heads, self.x_embedder.grid_size)
            if c.attention == "mhsa":
                return Attention(c.hidden_size, c.num_heads, qkv_bias=True, query_key=query_key)
            return VisualContrastAttention(
                c.hidden_size, c.num_heads, self.x_embedder.grid_size, layer_index=layer_index,
                pool_size=c.vca_pool_size, stage2_softmax=c.vca_stage2_softmax, local_term=c.vca_local_term,
                contrast_tokens=c.vca_contrast_tokens, shared_pos_embed=c.vca_shared_pos_embed, query_key=query_key,
            )

        self.blocks = nn.ModuleList(
            [DiTBlock(c.hidden_size, c.num_heads, c.mlp_ratio, make_attention(i), rmsnorm=c.rmsnorm, swiglu=c.swiglu)
             for i in range(c.depth)]
        )
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, self.out_channels, rmsnorm=c.rmsnorm)
        # REPA: an MLP from the hidden states after block repa_depth to the frozen encoder's features (training only)
        self.projector = None if c.repa_depth is None else nn.Sequential(
            nn.Linear(c.hidden_size, c.repa_projector_dim), nn.SiLU(),
            nn.Linear(c.repa_projector_dim, c.repa_projector_dim), nn.SiLU(),
            nn.Linear(c.repa_projector_dim, c.repa_dim))
        self.aligned_tokens = None  # the projector's output of the last training forward: [B, N, repa_dim]
        self.initialize_weights()

    def initialize_weights(self):
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        grid_side = self.x_embedder.grid_size[0]
        pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], grid_side)
        self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))

        # The patch embedding is initialised like a linear layer, not a convolution.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        # adaLN-Zero: every residual branch and the output start at zero, so each block starts as the identity.
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x):
        """[B, T, p*p*C] -> [B, C, H, W]."""
        c, p = self.out_channels, self.patch_size
        h, w = self.x_embedder.grid_size
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t, y):
        """x: [B, C, H, W] latents, t: [B] timesteps, y: [B] class labels (num_classes = the null class)."""
        x = self.x_embedder(x) + self.pos_embed.to(x.dtype)
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        for depth, block in enumerate(self.blocks, start=1):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, c, use_reentrant=False)
            else:
                x = block(x, c)
            if self.projector is not None and depth == self.config.repa_depth and self.training:
                self.aligned_tokens = self.projector(x)  # read by the alignment loss (gen.training.alignment)
        return self.unpatchify(self.final_layer(x, c))

    def forward_with_cfg(self, x, t, y, cfg_scale: float):
        """Classifier-free guidance over a batch whose second half carries the null labels."""
        half = x[: len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        model_out = self.forward(combined, t, y)
        split = self.cfg_channels if self.cfg_channels is not None else self.in_channels
        eps, rest = model_out[:, :split], model_out[:, split:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)

    @property
    def name(self) -> str:
        return self.config.name

    def enable_gradient_checkpointing(self, enabled: bool = True):
        self.gradient_checkpointing = enabled
        return self


class SiT(DiT):
    """Scalable interpolant transformer: the DiT network whose output drops the learned-sigma half."""

    family = "SiT"

    def forward(self, x, t, y):
        out = super().forward(x, t, y)
        return out.chunk(2, dim=1)[0] if self.learn_sigma else out
