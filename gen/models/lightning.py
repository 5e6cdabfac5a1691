"""LightningDiT's block parts (hustvl/LightningDiT, models/): RMSNorm, the SwiGLU MLP, QK-norm and 2-D rotary
position embedding of queries and keys. Each is an option of ModelConfig (`rmsnorm`, `swiglu`, `qk_norm`, `rope`),
off by default so that DiT and SiT stay as published; tests/test_lightning.py holds them to LightningDiT's own
outputs (tests/fixtures/recipe_anchors.safetensors).
"""
import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last axis, computed in float32 (LLaMA's and LightningDiT's, eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def block_norm(hidden_size: int, rmsnorm: bool) -> nn.Module:
    """The pre-norm of a block or of the final layer: DiT's affine-free LayerNorm, or LightningDiT's RMSNorm."""
    return RMSNorm(hidden_size) if rmsnorm else nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)


class SwiGLU(nn.Module):
    """silu(x W1) * (x W2), then W3; LightningDiT sizes the hidden layer 2/3 of the GELU MLP's, so that both
    have about as many weights."""

    def __init__(self, hidden_size: int, mlp_hidden: int):
        super().__init__()
        hidden = int(2 / 3 * mlp_hidden)
        self.w12 = nn.Linear(hidden_size, 2 * hidden)
        self.w3 = nn.Linear(hidden, hidden_size)

    def forward(self, x):
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


def rotate_pairs(x):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the rotation by 90 degrees of each interleaved pair."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def rope_tables(head_dim: int, grid_size: tuple[int, int], theta: float = 10000.0):
    """(cos, sin), each [H*W, head_dim]: the first half of a head's channels rotates with the row, the second with
    the column, each pair at one of head_dim/4 frequencies theta^(-4i/head_dim) (LightningDiT's
    VisionRotaryEmbeddingFast at its own size)."""
    if head_dim % 4:
        raise ValueError(f"RoPE on a 2-D grid needs a head width divisible by 4, got {head_dim}")
    axis_dim = head_dim // 2
    freqs = 1.0 / theta ** (torch.arange(0, axis_dim, 2)[: axis_dim // 2].float() / axis_dim)
    rows, cols = (torch.arange(side, dtype=torch.float32) for side in grid_size)
    row_angles = torch.outer(rows, freqs).repeat_interleave(2, dim=-1)  # [H, axis_dim]
    col_angles = torch.outer(cols, freqs).repeat_interleave(2, dim=-1)  # [W, axis_dim]
    H, W = grid_size
    angles = torch.cat([row_angles[:, None].expand(H, W, -1), col_angles[None].expand(H, W, -1)], dim=-1)
    return angles.cos().reshape(H * W, head_dim), angles.sin().reshape(H * W, head_dim)


class QueryKeyTransform(nn.Module):
    """What LightningDiT does to queries and keys before attention: a per-head norm (QK-norm: LayerNorm, or RMSNorm
    with `rmsnorm`), then 2-D RoPE; q and k are [B, h, N, d]."""

    def __init__(self, head_dim: int, grid_size: tuple[int, int], *, qk_norm: bool, rope: bool, rmsnorm: bool):
        super().__init__()
        norm = (lambda: RMSNorm(head_dim)) if rmsnorm else (lambda: nn.LayerNorm(head_dim))
        self.q_norm = norm() if qk_norm else None
        self.k_norm = norm() if qk_norm else None
        self.rope = rope
        if rope:
            cos, sin = rope_tables(head_dim, grid_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def rotate(self, x):
        return x * self.rope_cos.to(x.dtype) + rotate_pairs(x) * self.rope_sin.to(x.dtype)

    def forward(self, q, k):
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            q, k = self.rotate(q), self.rotate(k)
        return q, k


def query_key_transform(config, head_dim: int, grid_size) -> QueryKeyTransform | None:
    """The transform a ModelConfig asks for, or None (DiT's and SiT's attention as published)."""
    if not (config.qk_norm or config.rope):
        return None
    return QueryKeyTransform(head_dim, grid_size, qk_norm=config.qk_norm, rope=config.rope, rmsnorm=config.rmsnorm)
