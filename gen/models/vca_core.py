"""VCA's core as one custom op (kernels="triton-core"): stage I, the contrast values and stage II in one Triton
kernel per direction (gen/models/vca_core_kernels.py), in place of two attention calls and the epilogue between
them. The contrast tokens before it and the norm, head merge and local term after it are vca_fused's.

    out, *saved = core(q, k, v, contrast, gain, lambda_vectors, lambda_init, scale, eps, joint)  # before its norm

The saved tensors (stage I's output and the softmaxes' statistics) are small: [B, h, 2n, d] and a few floats
per token. Tests compare the op's output and every gradient with the reference path.
"""
import math
import os

import torch
from torch import Tensor

from .vca_fused import LAMBDA_VECTORS, _alignment, _block_d, _heads_layout, _launch, _no_gradient_for_rstd


def _precision(dtype: torch.dtype) -> str:
    """float32 tiles multiply in float32 (as the reference; not TF32), bf16 ones in bf16, except under Triton's
    interpreter, which multiplies bf16 tiles wrongly: there they are multiplied as float32 ("upcast")."""
    if dtype == torch.float32:
        return "ieee"
    return "upcast" if os.environ.get("TRITON_INTERPRET") == "1" else "tf32"  # "tf32": ignored for bf16 tiles


WARPS = 8  # sm_90 (benchmarks/kernel_resources.py): 184-255 registers a thread at 8 warps, none spilled; 4 hit 255


def _blocks(n: int, d: int) -> dict:
    """Tile sizes: the contrast rows and the head width padded to powers of 2 of at least 16 (tl.dot's least),
    and tokens per tile so that a tile of scores and one of values stay near 4,096 float32 per program."""
    block_d = max(16, _block_d(d))
    return dict(BLOCK_C=max(16, _block_d(n)), BLOCK_N=64 if block_d <= 64 else 32, BLOCK_D=block_d)


def _strides(*tensors: Tensor) -> list[int]:
    return [stride for t in tensors for stride in t.stride()]


@torch.library.custom_op("vca::core", mutates_args=())
def core(q: Tensor, k: Tensor, v: Tensor, contrast: Tensor, gain: Tensor, lambda_vectors: list[Tensor],
         lambda_init: float, scale: float, eps: float, joint: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """q, k, v [B, h, N, d]; contrast [T+; T-] [B, h, 2n, d]; gain: stage I's norm gain [d]; lambda_vectors: q1,
    k1, q2, k2 of stage I's lambda, then of stage II's (`DifferentialLambda`; the kernels compute both). Returns
    stage II's output before its norm, then what the backward needs: stage I's output U, the log-sum-exps of
    stage I [B, h, 2n] and of stage II [B, h, 1 (joint) or 2, N], stage I's 1/rms [B, h, n]."""
    B, h, N, d = q.shape
    n = contrast.shape[2] // 2
    out, u = _heads_layout(q), contrast.new_empty(contrast.shape)
    lse1 = q.new_empty(B, h, 2 * n, dtype=torch.float32)
    lse2 = q.new_empty(B, h, 1 if joint else 2, N, dtype=torch.float32)
    rstd = q.new_empty(B, h, n, dtype=torch.float32)
    _launch("vca_core_forward", (B * h,), q, k, v, contrast, gain, *lambda_vectors, out, u, lse1, lse2, rstd,
            N, n, d, h, *_strides(q, k, v, contrast, out, u), lambda_init, 1 / math.sqrt(d), scale, eps, JOINT=joint,
            PRECISION=_precision(q.dtype), ALIGN=_alignment(q, k, v, contrast, out, u), **_blocks(n, d),
            num_warps=WARPS)
    return out, u, lse1, lse2, rstd


@core.register_fake
def _(q, k, v, contrast, gain, lambda_vectors, lambda_init, scale, eps, joint):
    B, h, N, _ = q.shape
    n = contrast.shape[2] // 2
    return (_heads_layout(q), contrast.new_empty(contrast.shape), q.new_empty(B, h, 2 * n, dtype=torch.float32),
            q.new_empty(B, h, 1 if joint else 2, N, dtype=torch.float32), q.new_empty(B, h, n, dtype=torch.float32))


@torch.library.custom_op("vca::core_backward", mutates_args=())
def core_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, contrast: Tensor, gain: Tensor,
                  lambda_vectors: list[Tensor], u: Tensor, lse1: Tensor, lse2: Tensor, rstd: Tensor, lambda_init: float,
                  scale: float, joint: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """dq (stage II's part; the pooling's part flows back through the contrast tokens), dk, dv, d contrast, and
    float32 [9, d]: the gain's gradient, then those of the 8 lambda vectors."""
    B, h, N, d = q.shape
    n = contrast.shape[2] // 2
    dq, dk, dv = _heads_layout(q), _heads_layout(k), _heads_layout(v)
    d_contrast = torch.empty_like(contrast)
    partial = q.new_empty(B * h, d + 2, dtype=torch.float32)
    _launch("vca_core_backward", (B * h,), grad, q, k, v, contrast, gain, *lambda_vectors, u, lse1, lse2, rstd,
            dq, dk, dv, d_contrast, partial, N, n, d, h, *_strides(grad, q, k, v, contrast, u, dq, dk, dv, d_contrast),
            lambda_init, 1 / math.sqrt(d), scale, JOINT=joint,
            PRECISION=_precision(q.dtype), ALIGN=_alignment(grad, q, k, v, contrast, u, dq, dk, dv, d_contrast),
            **_blocks(n, d), num_warps=WARPS)
    small = q.new_empty(9, d, dtype=torch.float32)  # summed by torch, then the lambdas' chain rule in one program
    _launch("contrast_values_finish", (1,), partial.sum(0), *lambda_vectors, small, d, BLOCK_D=_block_d(d))
    return dq, dk, dv, d_contrast, small


@core_backward.register_fake
def _(grad, q, k, v, contrast, gain, lambda_vectors, u, lse1, lse2, rstd, lambda_init, scale, joint):
    return (_heads_layout(q), _heads_layout(k), _heads_layout(v), torch.empty_like(contrast),
            q.new_empty(9, q.shape[-1], dtype=torch.float32))


def _core_setup(ctx, inputs, output):
    q, k, v, contrast, gain, lambda_vectors, lambda_init, scale, _, joint = inputs
    _, u, lse1, lse2, rstd = output
    ctx.save_for_backward(q, k, v, contrast, gain, u, lse1, lse2, rstd, *lambda_vectors)
    ctx.lambda_init, ctx.scale, ctx.joint = lambda_init, scale, joint
    for saved in (u, lse1, lse2):
        ctx.mark_non_differentiable(saved)
    _no_gradient_for_rstd(ctx, rstd)


def _core_grad(ctx, grad_out, *_saved_grads):
    q, k, v, contrast, gain, u, lse1, lse2, rstd, *lambda_vectors = ctx.saved_tensors
    dq, dk, dv, d_contrast, small = core_backward(grad_out, q, k, v, contrast, gain, lambda_vectors, u, lse1, lse2,
                                                  rstd, ctx.lambda_init, ctx.scale, ctx.joint)
    grad_lambdas = [grad.to(vector.dtype) for grad, vector in zip(small[1:], lambda_vectors, strict=True)]
    return dq, dk, dv, d_contrast, small[0].to(gain.dtype), grad_lambdas, None, None, None, None


core.register_autograd(_core_grad, setup_context=_core_setup)


def core_stages(vca, q: Tensor, k: Tensor, v: Tensor, contrast: Tensor, scale: float) -> Tensor:
    """vca_fused.fused_forward's stages as the one op, its tensors in one dtype: autocast's, as attention's would
    be (QK-norm leaves q and k in float32 under autocast)."""
    device = q.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else v.dtype
    q, k, v, contrast = (t.to(dtype) for t in (q, k, v, contrast))
    lambdas = [getattr(stage, name) for stage in (vca.stage1_lambda, vca.stage2_lambda) for name in LAMBDA_VECTORS]
    return core(q, k, v, contrast, vca.stage1_norm.weight, lambdas, vca.lambda_init, scale, vca.stage1_norm.eps,
                vca.stage2_softmax == "joint")[0]
