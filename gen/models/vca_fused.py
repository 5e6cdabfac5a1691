"""VCA's fused path: the two attention calls of docs/vca.md with Triton epilogues and pooling as one matmul.

Per block the forward is: qkv, contrast tokens (pooling + both positional embeddings as one batched matmul
with a bias), stage I attention, `contrast_values` (U+ - l1 U-, RMS norm, gain, and the stage-II values
[Vc; -l2 Vc] in one pass), stage II attention, `norm_merge_local` (RMS norm, gain, head merge, depthwise 3x3
convolution and its bias in one pass), proj. The two epilogues are custom ops with hand-written backward
kernels, so torch.compile keeps them whole. The reference path (`VisualContrastAttention.reference_forward`)
is the specification; tests compare every output and gradient with it, on the CPU through Triton's interpreter.
"""
import contextlib
import importlib
import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

_KERNELS = None
LAMBDA_VECTORS = ("q1", "k1", "q2", "k2")  # the parameters of `DifferentialLambda`, in the kernels' order


def _kernels():
    """The Triton kernels, imported on first use (Triton reads TRITON_INTERPRET when they are defined)."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = importlib.import_module("gen.models.vca_kernels")
    return _KERNELS


_TRITON = importlib.util.find_spec("triton") is not None  # found, not imported: see `_kernels`


def triton_available() -> bool:
    """CPU-only torch builds ship without Triton; there the fused path is never chosen by default."""
    return _TRITON


def _warps(tile_elements: int) -> int:
    """More warps for larger float32 tiles, so that each thread holds at most ~16 values per tile (no spills)."""
    return 4 if tile_elements <= 2048 else 8


def _alignment(*tensors: Tensor) -> int:
    """The largest of 8, 4, 2, 1 dividing every stride but the unit ones: the kernels' hint that each head's
    rows start aligned (Triton only sees multiples of 16 itself, and heads of 72 would load element by element)."""
    strides = [stride for t in tensors for stride in t.stride() if stride != 1]
    return next(align for align in (8, 4, 2, 1) if all(stride % align == 0 for stride in strides))


def _launch(name: str, grid: tuple, *args, **meta):
    """Kernel `name` of vca_kernels on the first tensor's device (Triton uses the current one); a Triton failure
    (no C compiler for its launcher, a GPU it does not support) says how to go back to the torch path."""
    device = args[0].device
    try:
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            getattr(_kernels(), name)[grid](*args, **meta)
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise RuntimeError(f"VCA's fused Triton kernel {name} failed ({type(error).__name__}: {first_line}); "
                           "run with --vca-kernels torch (or kernels='torch') to use torch ops") from error


def _sm_count(t: Tensor) -> int:
    return torch.cuda.get_device_properties(t.device).multi_processor_count if t.is_cuda else 132


def _heads_layout(like: Tensor) -> Tensor:
    """An empty [B, h, S, d] tensor shaped like `like`, stored [B, S, h, d]: the layout flash attention keeps
    and reads without a copy."""
    B, h, S, d = like.shape
    return like.new_empty(B, S, h, d).transpose(1, 2)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _block_d(d: int) -> int:
    """Head widths need not be powers of 2 (DiT-XL: 72); the kernels mask the rest of the block."""
    return 1 << (d - 1).bit_length()


# -- stage I epilogue -------------------------------------------------------------------------------------------
@torch.library.custom_op("vca::contrast_values", mutates_args=())
def contrast_values(u: Tensor, gain: Tensor, lambda_vectors: list[Tensor], lambda_init: float, scale: float,
                    eps: float) -> tuple[Tensor, Tensor]:
    """u [B, h, 2n, d] (stage I's output, plus rows first) -> values [B, h, 2n, d] = [Vc; -l2 Vc], and 1/rms.

    `lambda_vectors`: q1, k1, q2, k2 of stage I's lambda, then of stage II's (`DifferentialLambda`).
    """
    B, h, n2, d = u.shape
    n = n2 // 2
    values = _heads_layout(u)
    rstd = u.new_empty(B, h, n, dtype=torch.float32)
    rows, block_r = B * h * n, 32
    _launch("contrast_values_forward", (_cdiv(rows, block_r),),
            u, values, rstd, gain, *lambda_vectors, rows, h, n, d, *u.stride(), *values.stride(), lambda_init,
            scale, eps, ALIGN=_alignment(u, values), BLOCK_R=block_r, BLOCK_D=_block_d(d),
            num_warps=_warps(block_r * _block_d(d)))
    return values, rstd


@contrast_values.register_fake
def _(u, gain, lambda_vectors, lambda_init, scale, eps):
    B, h, n2, d = u.shape
    return _heads_layout(u), u.new_empty(B, h, n2 // 2, dtype=torch.float32)


@torch.library.custom_op("vca::contrast_values_backward", mutates_args=())
def contrast_values_backward(grad: Tensor, u: Tensor, rstd: Tensor, gain: Tensor, lambda_vectors: list[Tensor],
                             lambda_init: float, scale: float) -> tuple[Tensor, Tensor]:
    """dU, and [9, d] float32: the gain's gradient, then those of the 8 lambda vectors."""
    B, h, n2, d = u.shape
    n = n2 // 2
    grad_u = _heads_layout(u)
    rows, block_r = B * h * n, 32
    programs = _cdiv(rows, block_r)
    partial = torch.empty(programs, d + 2, device=u.device, dtype=torch.float32)
    small = torch.empty(9, d, device=u.device, dtype=torch.float32)
    _launch("contrast_values_backward", (programs,),
            grad, u, rstd, gain, grad_u, partial, *lambda_vectors, rows, h, n, d,
            *grad.stride(), *u.stride(), *grad_u.stride(), lambda_init, scale, ALIGN=_alignment(grad, u, grad_u),
            BLOCK_R=block_r, BLOCK_D=_block_d(d), num_warps=_warps(block_r * _block_d(d)))
    total = partial.sum(0)  # torch's reduction spreads over the GPU; the finishing kernel is one program
    _launch("contrast_values_finish", (1,), total, *lambda_vectors, small, d, BLOCK_D=_block_d(d))
    return grad_u, small


@contrast_values_backward.register_fake
def _(grad, u, rstd, gain, lambda_vectors, lambda_init, scale):
    return _heads_layout(u), u.new_empty(9, u.shape[-1], dtype=torch.float32)


def _contrast_values_setup(ctx, inputs, output):
    u, gain, lambda_vectors, lambda_init, scale, _ = inputs
    ctx.save_for_backward(u, output[1], gain, *lambda_vectors)
    ctx.lambda_init, ctx.scale = lambda_init, scale
    _no_gradient_for_rstd(ctx, output[1])


def _no_gradient_for_rstd(ctx, rstd):
    """1/rms is returned for the backward only: no zero gradient is made for it."""
    ctx.mark_non_differentiable(rstd)
    ctx.set_materialize_grads(False)


def _contrast_values_grad(ctx, grad_values, _grad_rstd):
    u, rstd, gain, *lambda_vectors = ctx.saved_tensors
    grad_u, small = contrast_values_backward(grad_values, u, rstd, gain, lambda_vectors, ctx.lambda_init, ctx.scale)
    grad_lambdas = [grad.to(vector.dtype) for grad, vector in zip(small[1:], lambda_vectors, strict=True)]
    return grad_u, small[0].to(gain.dtype), grad_lambdas, None, None, None


contrast_values.register_autograd(_contrast_values_grad, setup_context=_contrast_values_setup)


# -- stage II epilogue ------------------------------------------------------------------------------------------
@torch.library.custom_op("vca::norm_merge_local", mutates_args=())
def norm_merge_local(o: Tensor, v: Tensor, gain: Tensor, conv_weight: Tensor | None, conv_bias: Tensor | None,
                     grid_height: int, grid_width: int, scale: float, eps: float) -> tuple[Tensor, Tensor]:
    """o, v [B, h, N, d] -> [B, N, C] = merge(RMSNorm(o) * gain * scale) + DepthwiseConv3x3(v) + bias, and 1/rms."""
    B, h, N, d = o.shape
    out = o.new_empty(B, N, h * d)
    rstd = o.new_empty(B, h, N, dtype=torch.float32)
    block_t = 64 if _block_d(d) <= 64 else 32
    has_local = conv_weight is not None
    _launch("norm_merge_local_forward", (_cdiv(N, block_t), h, B),
            o, v, gain, conv_weight if has_local else gain, conv_bias if has_local else gain, out, rstd,
            N, grid_height, grid_width, h, d, *o.stride(), *v.stride(), scale, eps, HAS_LOCAL=has_local,
            ALIGN=_alignment(o, v), BLOCK_T=block_t, BLOCK_D=_block_d(d), num_warps=_warps(block_t * _block_d(d)))
    return out, rstd


@norm_merge_local.register_fake
def _(o, v, gain, conv_weight, conv_bias, grid_height, grid_width, scale, eps):
    B, h, N, d = o.shape
    return o.new_empty(B, N, h * d), o.new_empty(B, h, N, dtype=torch.float32)


@torch.library.custom_op("vca::norm_merge_local_backward", mutates_args=())
def norm_merge_local_backward(grad: Tensor, o: Tensor, v: Tensor, rstd: Tensor, gain: Tensor,
                              conv_weight: Tensor | None, grid_height: int, grid_width: int,
                              scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """do, dv (empty without the local term), and float32 [dgain by channel (C), dbias (C), dweight (C*9)]."""
    B, h, N, d = o.shape
    C = h * d
    grad_o = _heads_layout(o)
    has_local = conv_weight is not None
    grad_v = _heads_layout(o) if has_local else o.new_empty(0)
    tokens = min(256, _block_d(N))  # per program, walked in tiles: few partial rows to sum ...
    while tokens > 64 and _cdiv(N, tokens) * h * B < 4 * _sm_count(o):  # ... but programs enough for every SM
        tokens //= 2
    groups, block_t = _cdiv(N, tokens), min(16, tokens)
    partial = torch.empty(B * groups, 11 * C if has_local else C, device=o.device, dtype=torch.float32)
    _launch("norm_merge_local_backward", (groups, h, B),
            grad, o, v, rstd, gain, conv_weight if has_local else gain, grad_o, grad_v if has_local else grad_o,
            partial, N, grid_height, grid_width, h, d, groups, *grad.stride(), *o.stride(), *v.stride(),
            *grad_o.stride(), scale, HAS_LOCAL=has_local, ALIGN=_alignment(grad, o, v, grad_o), TOKENS=tokens,
            BLOCK_T=block_t, BLOCK_D=_block_d(d), num_warps=_warps(4 * block_t * _block_d(d)))  # ~4x the tiles live
    return grad_o, grad_v, partial.sum(0)


@norm_merge_local_backward.register_fake
def _(grad, o, v, rstd, gain, conv_weight, grid_height, grid_width, scale):
    _, h, _, d = o.shape
    has_local = conv_weight is not None
    return (_heads_layout(o),
            _heads_layout(o) if has_local else o.new_empty(0),
            o.new_empty((11 if has_local else 1) * h * d, dtype=torch.float32))


def _norm_merge_local_setup(ctx, inputs, output):
    o, v, gain, conv_weight, _, grid_height, grid_width, scale, _ = inputs
    ctx.save_for_backward(o, v, output[1], gain, conv_weight)
    ctx.grid, ctx.scale = (grid_height, grid_width), scale
    _no_gradient_for_rstd(ctx, output[1])


def _norm_merge_local_grad(ctx, grad_out, _grad_rstd):
    o, v, rstd, gain, conv_weight = ctx.saved_tensors
    grad_o, grad_v, sums = norm_merge_local_backward(grad_out.contiguous(), o, v, rstd, gain, conv_weight,
                                                     *ctx.grid, ctx.scale)
    C = o.shape[1] * o.shape[3]
    grad_gain = sums[:C].view(o.shape[1], -1).sum(0).to(gain.dtype)  # one gain shared by the heads
    if conv_weight is None:
        return grad_o, None, grad_gain, None, None, None, None, None, None
    grad_weight = sums[2 * C:].view_as(conv_weight).to(conv_weight.dtype)
    return grad_o, grad_v, grad_gain, grad_weight, sums[C:2 * C].to(conv_weight.dtype), None, None, None, None


norm_merge_local.register_autograd(_norm_merge_local_grad, setup_context=_norm_merge_local_setup)


# -- the forward ------------------------------------------------------------------------------------------------
def pooling_bins(grid_size, pool_size) -> tuple[Tensor, Tensor, float | None]:
    """Adaptive average pooling of a row-major token grid (bins as adaptive_avg_pool2d) as a matrix product:
    a 0/1 bin membership [sh*sw, H*W], exact in bf16; each bin's 1 / size [sh*sw, 1], applied in float32; and
    that 1 / size as a number when all bins have one size (the usual case). Sizes are counted in Python, so
    this also builds on the meta device."""
    def bins(size, pooled):
        return [((i * size) // pooled, -(-((i + 1) * size) // pooled)) for i in range(pooled)]

    (H, W), (sh, sw) = grid_size, pool_size
    rows, columns = bins(H, sh), bins(W, sw)
    member = torch.zeros(sh, sw, H, W)
    for i, (top, bottom) in enumerate(rows):
        for j, (left, right) in enumerate(columns):
            member[i, j, top:bottom, left:right] = 1.0
    sizes = [(bottom - top) * (right - left) for top, bottom in rows for left, right in columns]
    uniform = 1.0 / sizes[0] if len(set(sizes)) == 1 else None
    return member.view(sh * sw, H * W), 1.0 / torch.tensor(sizes, dtype=torch.float32).view(-1, 1), uniform


def fused_forward(vca, x: Tensor, stages=None) -> Tensor:
    """`VisualContrastAttention.forward` through the fused kernels; equal to the reference to float rounding.
    `stages`: what makes stage II's output from q, k, v and the contrast tokens (default: `attention_stages`;
    vca_core.core_stages for kernels="triton-core")."""
    q, k, v = vca._split_heads_qkv(x)
    contrast = _contrast_tokens(vca, q, x.shape[0])  # [B, h, 2n, d]
    scale = 1 - vca.lambda_init
    out = (stages or attention_stages)(vca, q, k, v, contrast, scale)
    conv = vca.local_conv
    merged, _ = norm_merge_local(out, v, vca.stage2_norm.weight, None if conv is None else conv.weight,
                                 None if conv is None else conv.bias, *vca.grid_size, scale, vca.stage2_norm.eps)
    return vca.proj(merged)


def attention_stages(vca, q: Tensor, k: Tensor, v: Tensor, contrast: Tensor, scale: float) -> Tensor:
    """Stage I and stage II as two attention calls with the contrast values' epilogue between them."""
    n = vca.num_contrast
    lambdas = [getattr(stage, name) for stage in (vca.stage1_lambda, vca.stage2_lambda) for name in LAMBDA_VECTORS]
    u = F.scaled_dot_product_attention(contrast, k, v)
    values, _ = contrast_values(u, vca.stage1_norm.weight, lambdas, vca.lambda_init, scale, vca.stage1_norm.eps)
    if vca.stage2_softmax == "joint":
        return F.scaled_dot_product_attention(q, contrast, values)
    # A+ Vc - l2 A- Vc, the values' second half holding -l2 Vc
    return (F.scaled_dot_product_attention(q, contrast[:, :, :n], values[:, :, :n])
            + F.scaled_dot_product_attention(q, contrast[:, :, n:], values[:, :, n:]))


def _contrast_tokens(vca, q: Tensor, batch: int) -> Tensor:
    """[T+; T-] as [B, h, 2n, d], viewing a [B, 2n, C] tensor: pooled queries plus both embeddings, one matmul."""
    pos_minus = vca.contrast_pos_plus if vca.contrast_pos_minus is None else vca.contrast_pos_minus
    pos = torch.cat([vca.contrast_pos_plus, pos_minus])  # [2n, C]
    n2, C = pos.shape
    if vca.learned_contrast is not None:
        tokens = (pos + vca.learned_contrast.repeat(2, 1)).to(q.dtype).expand(batch, n2, C)
    else:
        member = vca.contrast_pool_member.to(q.dtype).expand(batch, -1, -1)  # [B, 2n, N]: [T+; T-] pool alike
        q_tokens = q.transpose(1, 2).reshape(batch, -1, C)  # a view of the qkv output
        if vca.contrast_pool_uniform:  # bins of one size: the 1 / size is the product's alpha, kept in float32
            tokens = torch.baddbmm(pos.to(q.dtype), member, q_tokens, alpha=vca.contrast_pool_uniform)
        else:
            tokens = torch.addcmul(pos, torch.bmm(member, q_tokens), vca.contrast_pool_scale).to(q.dtype)
    return tokens.view(batch, n2, vca.num_heads, vca.head_dim).transpose(1, 2)


