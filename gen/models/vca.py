"""Visual-Contrast Attention (VCA), a linear-cost drop-in for self-attention on a 2-D token grid.

Implements docs/vca.md (Pu et al., "Linear Differential Vision Transformer", NeurIPS 2025):
pooled queries become 2n contrast tokens (dual positional embeddings), which first gather the global
context (stage I) and then hand it back to every query through one differential attention (stage II).
`forward` is the fast path (two scaled_dot_product_attention calls); `reference_forward` is the slow path
written straight from the equations, and the one that returns the attention maps.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import split_heads_qkv
from .vca_core import core_stages
from .vca_fused import fused_forward, pooling_bins, triton_available


def lambda_init_for_layer(layer_index: int) -> float:
    """The differential weight's starting value for the block at 0-based `layer_index` (as in DIFF Transformer)."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_index)


def default_pool_size(grid_size: tuple[int, int]) -> int:
    """Side of the pooled grid: 8 x 8 contrast tokens where the grid allows it, never more than half a side."""
    return min(8, min(grid_size) // 2)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


KERNELS = ("auto", "torch", "triton", "triton-core")


def auto_takes_triton(device_type: str, dtype: torch.dtype, head_dim: int) -> bool:
    """kernels="auto": the fused kernels on CUDA for head widths that are powers of 2 (width 72, padded to 128 lanes,
    is faster on torch ops: the measurements are in docs/vca.md). Never for float64 inputs, which the kernels would
    compute in float32."""
    return device_type == "cuda" and dtype != torch.float64 and head_dim & (head_dim - 1) == 0


def check_kernels(kernels: str) -> str:
    """The fast path's kernels: "torch" (any device), "triton" (fused epilogues around two attention calls, CUDA or
    Triton's interpreter), "triton-core" (stage I, the contrast values and stage II in one kernel pair), "auto"."""
    if kernels not in KERNELS:
        raise ValueError(f"VCA kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
    return kernels


def set_vca_kernels(model: nn.Module, kernels: str) -> nn.Module:
    """Choose the fast path's kernels for every VCA module of `model` ("auto": Triton on CUDA, torch elsewhere)."""
    check_kernels(kernels)
    for module in model.modules():
        if isinstance(module, VisualContrastAttention):
            module.kernels = kernels
    return model


class DifferentialLambda(nn.Module):
    """lambda = exp(<q1, k1>) - exp(<q2, k2>) + lambda_init: one learnable scalar per stage and layer."""

    def __init__(self, head_dim: int, lambda_init: float):
        super().__init__()
        self.lambda_init = lambda_init
        self.q1 = nn.Parameter(torch.randn(head_dim) * 0.1)
        self.k1 = nn.Parameter(torch.randn(head_dim) * 0.1)
        self.q2 = nn.Parameter(torch.randn(head_dim) * 0.1)
        self.k2 = nn.Parameter(torch.randn(head_dim) * 0.1)

    def forward(self) -> torch.Tensor:
        dtype = torch.promote_types(self.q1.dtype, torch.float32)  # at least float32, even under autocast
        dot1 = torch.dot(self.q1.to(dtype), self.k1.to(dtype))
        dot2 = torch.dot(self.q2.to(dtype), self.k2.to(dtype))
        return torch.exp(dot1) - torch.exp(dot2) + self.lambda_init


class HeadRMSNorm(nn.Module):
    """RMS norm over each head's d channels with a learnable gain, computed in float32 for stability."""

    def __init__(self, head_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(head_dim))

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """RMSNorm(x) * scale; the scale folds into the gain so that no extra activation is stored."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        normed = F.rms_norm(x.to(dtype), (x.shape[-1],), self.weight.to(dtype) * scale, self.eps)
        return normed.to(x.dtype)


class NormMergeAdd(torch.autograd.Function):
    """RMSNorm_d(x) * gain with heads merged, plus the local term: [B, h, N, d] -> [B, N, C] in two passes.

    The fast path's stage-II output; equals `_finish`'s merge of `HeadRMSNorm(x, scale)` plus the local term
    to float rounding. Autograd over the plain ops would make ~10 passes over N x C values and keep the
    normalised copy for the gain's gradient; here the backward makes four, with both reductions as GEMVs.
    """

    @staticmethod
    def forward(ctx, x, gain, local, eps):
        B, h, N, d = x.shape
        inv_rms = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_() / d + eps)
        merged = x.new_empty(B, N, h, d)
        heads = merged.transpose(1, 2)  # written in the merged layout, so no transposed copy later
        torch.mul(x, inv_rms, out=heads)
        if local is None:
            heads.mul_(gain)
        else:
            torch.addcmul(local.reshape(B, N, h, d).transpose(1, 2), heads, gain, out=heads)
        ctx.save_for_backward(x, gain, inv_rms)
        ctx.has_local = local is not None
        return merged.view(B, N, h * d)

    @staticmethod
    def backward(ctx, grad):
        x, gain, inv_rms = ctx.saved_tensors
        B, h, N, d = x.shape
        grad_heads = grad.reshape(B, N, h, d).transpose(1, 2)
        grad_times_x = torch.mul(grad_heads, x, out=x.new_empty(x.shape)).view(-1, d)  # rows in (B, h, N) order
        dot = (grad_times_x @ gain).view(B, h, N, 1)  # <grad * gain, x> per token
        grad_gain = inv_rms.reshape(1, -1) @ grad_times_x
        # d/dx [x r g] = r (grad g - x r^2 <grad g, x> / d)
        grad_x = x * (-inv_rms.square() * dot / d)
        grad_x.addcmul_(grad_heads, gain).mul_(inv_rms)
        return grad_x, grad_gain.view(d), grad if ctx.has_local else None, None


class VisualContrastAttention(nn.Module):
    """VCA over tokens `[B, N, C]` lying row-major on a `grid_size` (H, W) grid.

    Options: `pool_size` (side s of the pooled grid, default min(8, side // 2); an int or (sh, sw)),
    `stage2_softmax` ("joint": one softmax over [T+; T-], the released code's choice, or "separate"),
    `local_term` (the depthwise 3x3 convolution of V), `layer_index` (sets lambda_init), `query_key` (a module
    (q, k) -> (q, k) before both stages: LightningDiT's QK-norm and RoPE), and two ablations, off by default:
    `contrast_tokens="learned"` (a learned embedding instead of pooled queries) and `shared_pos_embed` (E+ = E-).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size,
        layer_index: int = 0,
        pool_size=None,
        stage2_softmax: str = "joint",
        local_term: bool = True,
        contrast_tokens: str = "pool",
        shared_pos_embed: bool = False,
        qkv_bias: bool = True,
        kernels: str = "auto",
        query_key: nn.Module | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        if stage2_softmax not in ("joint", "separate"):
            raise ValueError(f"stage2_softmax must be 'joint' or 'separate', got {stage2_softmax!r}")
        if contrast_tokens not in ("pool", "learned"):
            raise ValueError(f"contrast_tokens must be 'pool' or 'learned', got {contrast_tokens!r}")
        self.kernels = check_kernels(kernels)
        self.grid_size = _pair(grid_size)
        self.pool_size = _pair(default_pool_size(self.grid_size) if pool_size is None else pool_size)
        (H, W), (sh, sw) = self.grid_size, self.pool_size
        if sh < 1 or sw < 1 or sh > H or sw > W:
            raise ValueError(
                f"VCA pooled grid {sh}x{sw} does not fit the {H}x{W} token grid; use a larger image or "
                f"smaller patches, or set vca_pool_size to at most {min(H, W)}"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.num_contrast = sh * sw
        self.stage2_softmax = stage2_softmax
        self.lambda_init = lambda_init_for_layer(layer_index)

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.query_key = query_key  # QK-norm and RoPE act on Q and K before pooling: T+- inherit them
        self.contrast_pos_plus = nn.Parameter(torch.randn(self.num_contrast, dim))
        self.contrast_pos_minus = None if shared_pos_embed else nn.Parameter(torch.randn(self.num_contrast, dim))
        learned = contrast_tokens == "learned"
        self.learned_contrast = nn.Parameter(torch.randn(self.num_contrast, dim)) if learned else None
        self.stage1_lambda = DifferentialLambda(self.head_dim, self.lambda_init)
        self.stage2_lambda = DifferentialLambda(self.head_dim, self.lambda_init)
        self.stage1_norm = HeadRMSNorm(self.head_dim)
        self.stage2_norm = HeadRMSNorm(self.head_dim)
        self.local_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if local_term else None
        self.proj = nn.Linear(dim, dim)
        # The fused path pools as a matrix product: bin membership [2n, N] ([T+; T-] pool the same queries).
        member, scale, self.contrast_pool_uniform = pooling_bins(self.grid_size, self.pool_size)
        self.register_buffer("contrast_pool_member", member.repeat(2, 1), persistent=False)
        self.register_buffer("contrast_pool_scale", scale.repeat(2, 1), persistent=False)

    # -- shared pieces ---------------------------------------------------------------------------------------
    def _uses_fused_kernels(self, x) -> bool:
        """The Triton path where asked for, or by default on CUDA; the torch path otherwise."""
        if self.kernels.startswith("triton") and not triton_available():
            raise RuntimeError(f"VCA kernels={self.kernels!r} needs Triton (it ships with torch's CUDA builds); "
                               "use kernels='torch' or install triton")
        if self.kernels != "auto":
            return self.kernels != "torch"
        return auto_takes_triton(x.device.type, x.dtype, self.head_dim) and triton_available()

    def _check_tokens(self, x):
        if x.shape[1] != self.grid_size[0] * self.grid_size[1]:
            raise ValueError(f"VCA built for a {self.grid_size} grid ({self.grid_size[0] * self.grid_size[1]} "
                             f"tokens) got {x.shape[1]} tokens; build the model for this input size")

    def _split_heads_qkv(self, x):
        """q, k, v [B, h, N, d], q and k through `query_key` when the model has one (every path starts here)."""
        self._check_tokens(x)
        q, k, v = split_heads_qkv(self.qkv(x), self.num_heads)
        if self.query_key is not None:
            q, k = self.query_key(q, k)
        return q, k, v

    def _to_grid(self, tokens):
        """[B, h, N, d] -> [B, C, H, W] ordered channels-last, channel = head * d + j (the merge order).

        For q and v (views of the qkv output) this is a view: no copy is made or kept for the backward, and
        pooling and the depthwise convolution run vectorised over the innermost channels.
        """
        B = tokens.shape[0]
        return tokens.transpose(1, 2).reshape(B, *self.grid_size, -1).permute(0, 3, 1, 2)

    def _per_head(self, embedding):
        """[n, C] -> [h, n, d]."""
        return embedding.view(self.num_contrast, self.num_heads, self.head_dim).transpose(0, 1)

    def _pool(self, q):
        """Adaptive average pooling of q [B, h, N, d] to [B, h, n, d] over the token grid."""
        B, h, _, d = q.shape
        pooled = F.adaptive_avg_pool2d(self._to_grid(q), self.pool_size)  # [B, C, sh, sw]
        return pooled.reshape(B, h, d, -1).transpose(-1, -2)

    def contrast_tokens(self, q):
        """The visual-contrast tokens T+ and T-, each [B, h, n, d]."""
        if self.learned_contrast is None:
            pooled = self._pool(q)
        else:
            pooled = self._per_head(self.learned_contrast).unsqueeze(0)
        pos_minus = self.contrast_pos_plus if self.contrast_pos_minus is None else self.contrast_pos_minus
        plus = pooled + self._per_head(self.contrast_pos_plus).to(q.dtype)
        minus = pooled + self._per_head(pos_minus).to(q.dtype)
        return plus.expand(q.shape[0], -1, -1, -1), minus.expand(q.shape[0], -1, -1, -1)

    def _local_term(self, v):
        """The depthwise 3x3 convolution of V, as tokens [B, N, C]; None when the option is off."""
        if self.local_conv is None:
            return None
        return self.local_conv(self._to_grid(v)).flatten(2).transpose(1, 2)

    def _finish(self, out, v):
        """Merge heads, add the local depthwise term, project."""
        B, _, N, _ = out.shape
        out = out.transpose(1, 2).reshape(B, N, -1)
        local = self._local_term(v)
        return self.proj(out if local is None else out + local)

    # -- fast path -------------------------------------------------------------------------------------------
    def forward(self, x, return_attention_maps: bool = False):
        if return_attention_maps:
            return self.reference_forward(x, return_attention_maps=True)
        if self._uses_fused_kernels(x):
            self._check_tokens(x)
            return fused_forward(self, x, core_stages if self.kernels == "triton-core" else None)
        q, k, v = self._split_heads_qkv(x)
        plus, minus = self.contrast_tokens(q)
        contrast = torch.cat([plus, minus], dim=2)
        scale = 1 - self.lambda_init
        lambda1, lambda2 = self.stage1_lambda(), self.stage2_lambda()

        # Stage I: the 2n contrast tokens gather global context from all N keys in one attention call.
        u_plus, u_minus = F.scaled_dot_product_attention(contrast, k, v).chunk(2, dim=2)
        contrast_values = self.stage1_norm(u_plus - lambda1 * u_minus, scale)

        # Stage II: (A+ - lambda2 A-) Vc as attention with values [Vc; -lambda2 Vc] (joint) or two calls.
        if self.stage2_softmax == "joint":
            values = torch.cat([contrast_values, -lambda2 * contrast_values], dim=2)
            out = F.scaled_dot_product_attention(q, contrast, values)
        else:
            out = (F.scaled_dot_product_attention(q, plus, contrast_values)
                   - lambda2 * F.scaled_dot_product_attention(q, minus, contrast_values))
        if out.dtype not in (torch.float32, torch.float64):  # autocast: the norm's float32 path
            return self._finish(self.stage2_norm(out, scale), v)
        merged = NormMergeAdd.apply(out, self.stage2_norm.weight * scale, self._local_term(v), self.stage2_norm.eps)
        return self.proj(merged)

    # -- slow reference path, straight from the equations ----------------------------------------------------
    def reference_forward(self, x, return_attention_maps: bool = False):
        q, k, v = self._split_heads_qkv(x)
        plus, minus = self.contrast_tokens(q)
        n, d = self.num_contrast, self.head_dim
        scale = 1 - self.lambda_init
        lambda1, lambda2 = self.stage1_lambda(), self.stage2_lambda()

        stage1_plus = torch.softmax(plus @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # [B, h, n, N]
        stage1_minus = torch.softmax(minus @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        contrast_values = self.stage1_norm(stage1_plus @ v - lambda1 * (stage1_minus @ v), scale)

        if self.stage2_softmax == "joint":
            logits = q @ torch.cat([plus, minus], dim=2).transpose(-1, -2) / math.sqrt(d)
            stage2_plus, stage2_minus = torch.softmax(logits, dim=-1).split(n, dim=-1)
        else:
            stage2_plus = torch.softmax(q @ plus.transpose(-1, -2) / math.sqrt(d), dim=-1)
            stage2_minus = torch.softmax(q @ minus.transpose(-1, -2) / math.sqrt(d), dim=-1)
        out = self.stage2_norm((stage2_plus - lambda2 * stage2_minus) @ contrast_values, scale)
        out = self._finish(out, v)
        if not return_attention_maps:
            return out
        maps = {
            "stage1": torch.cat([stage1_plus, stage1_minus], dim=2),  # [B, h, 2n, N]: contrast token -> keys
            "stage2": torch.cat([stage2_plus, stage2_minus], dim=-1),  # [B, h, N, 2n]: query -> contrast tokens
        }
        return out, maps
