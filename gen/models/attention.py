"""Multi-head self-attention as DiT uses it (timm's Attention: fused qkv with bias, then a projection)."""
import torch.nn.functional as F
from torch import nn


def split_heads_qkv(qkv, num_heads: int):
    """[B, N, 3C] -> q, k, v, each [B, h, N, d]: views of the one qkv output.

    Unbinding the q/k/v axis (not permuting it to the front) lets the backward stack the three gradients
    straight into the [B, N, 3C] layout: one pass instead of a stack and a transposed copy.
    """
    B, N, C3 = qkv.shape
    q, k, v = qkv.view(B, N, 3, num_heads, C3 // (3 * num_heads)).unbind(2)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class Attention(nn.Module):
    """`query_key` (optional): a module (q, k) -> (q, k) applied before attention, e.g. LightningDiT's QK-norm and
    RoPE (gen.models.lightning)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, query_key: nn.Module | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.query_key = query_key
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = split_heads_qkv(self.qkv(x), self.num_heads)
        if self.query_key is not None:
            q, k = self.query_key(q, k)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))
