"""Triton kernels of VCA's fused CUDA path: the two epilogues around its attention calls, forward and backward.

Every kernel reads its tensors through strides (the attention outputs and the q/k/v views of the qkv
projection are not contiguous) and computes in float32 whatever the storage dtype. Reductions over the batch
(the gains', lambdas' and convolution's gradients) are written as one row of partial sums per program and
summed by the caller, so no atomics and the same result on every run. Imported only when the fused path runs:
`triton.jit` reads TRITON_INTERPRET when a kernel is defined, and the tests set it to run these on the CPU.
"""
import triton
import triton.language as tl

from .vca_core_kernels import differential_lambda, load_vector, vca_core_backward, vca_core_forward  # noqa: F401


@triton.jit
def _contrast_rows(program, rows, heads, n, d, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program's BLOCK_R rows of the B*h*n (b, head, i) and its columns, with their masks."""
    row = program * BLOCK_R + tl.arange(0, BLOCK_R)
    col = tl.arange(0, BLOCK_D)
    row_ok, col_ok = row < rows, col < d
    return row, col, row_ok, col_ok, row_ok[:, None] & col_ok[None, :], row // (n * heads), (row // n) % heads, row % n


@triton.jit
def _plus_rows(ptr, b, head, i, s_b, s_h, s_i, s_j, col, ALIGN: tl.constexpr):
    """Pointers to the plus rows i of a [B, h, 2n, d] tensor; its minus rows lie n * s_i further."""
    return ptr + tl.multiple_of(b * s_b + head * s_h + i * s_i, ALIGN)[:, None] + col[None, :] * s_j


@triton.jit
def _load_halves(plus_rows, minus_offset, mask):
    return (tl.load(plus_rows, mask=mask, other=0.0).to(tl.float32),
            tl.load(plus_rows + minus_offset, mask=mask, other=0.0).to(tl.float32))


@triton.jit
def contrast_values_forward(
    u_ptr, values_ptr, rstd_ptr, gain_ptr,
    s1q1, s1k1, s1q2, s1k2, s2q1, s2k1, s2q2, s2k2,
    rows, heads, n, d: tl.constexpr,
    su_b, su_h, su_i, su_j, sv_b, sv_h, sv_i, sv_j,
    lambda_init, scale, eps,
    ALIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Stage I's epilogue: Vc = RMSNorm(U+ - l1 U-) * gain * scale, written as the values [Vc; -l2 Vc] of stage II.

    u and values are [B, h, 2n, d] (plus rows first); one program holds BLOCK_R of the B*h*n rows. The two
    lambdas are computed here from their vectors (s1*: stage I, s2*: stage II), saving a dozen tiny launches.
    """
    row, col, row_ok, col_ok, mask, b, head, i = _contrast_rows(tl.program_id(0), rows, heads, n, d, BLOCK_R, BLOCK_D)
    plus, minus = _load_halves(_plus_rows(u_ptr, b, head, i, su_b, su_h, su_i, su_j, col, ALIGN), n * su_i, mask)
    lambda1 = differential_lambda(s1q1, s1k1, s1q2, s1k2, lambda_init, d, BLOCK_D)
    lambda2 = differential_lambda(s2q1, s2k1, s2q2, s2k2, lambda_init, d, BLOCK_D)

    diff = plus - lambda1 * minus
    rstd = tl.rsqrt(tl.sum(diff * diff, axis=1) / d + eps)
    gain = tl.load(gain_ptr + col, mask=col_ok, other=0.0).to(tl.float32) * scale
    contrast_values = diff * rstd[:, None] * gain[None, :]

    out_plus = _plus_rows(values_ptr, b, head, i, sv_b, sv_h, sv_i, sv_j, col, ALIGN)
    tl.store(out_plus, contrast_values.to(values_ptr.dtype.element_ty), mask=mask)
    tl.store(out_plus + n * sv_i, (-lambda2 * contrast_values).to(values_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + row, rstd, mask=row_ok)


@triton.jit
def contrast_values_backward(
    grad_ptr, u_ptr, rstd_ptr, gain_ptr, grad_u_ptr, partial_ptr,
    s1q1, s1k1, s1q2, s1k2, s2q1, s2k1, s2q2, s2k2,
    rows, heads, n, d: tl.constexpr,
    sg_b, sg_h, sg_i, sg_j, su_b, su_h, su_i, su_j, sd_b, sd_h, sd_i, sd_j,
    lambda_init, scale,
    ALIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Gradients of `contrast_values_forward`: dU written, and per program a partial row [dgain (d), dl1, dl2]."""
    program = tl.program_id(0)
    row, col, row_ok, col_ok, mask, b, head, i = _contrast_rows(program, rows, heads, n, d, BLOCK_R, BLOCK_D)
    plus, minus = _load_halves(_plus_rows(u_ptr, b, head, i, su_b, su_h, su_i, su_j, col, ALIGN), n * su_i, mask)
    grad_plus, grad_minus = _load_halves(_plus_rows(grad_ptr, b, head, i, sg_b, sg_h, sg_i, sg_j, col, ALIGN),
                                         n * sg_i, mask)
    lambda1 = differential_lambda(s1q1, s1k1, s1q2, s1k2, lambda_init, d, BLOCK_D)
    lambda2 = differential_lambda(s2q1, s2k1, s2q2, s2k2, lambda_init, d, BLOCK_D)
    rstd = tl.load(rstd_ptr + row, mask=row_ok, other=0.0)
    gain = tl.load(gain_ptr + col, mask=col_ok, other=0.0).to(tl.float32) * scale

    normed = (plus - lambda1 * minus) * rstd[:, None]
    grad_contrast = grad_plus - lambda2 * grad_minus  # Vc feeds both halves of the values
    grad_lambda2 = -tl.sum(tl.sum(grad_minus * normed * gain[None, :], axis=1), axis=0)
    grad_scaled = grad_contrast * gain[None, :]
    # d/dx [x r g] = r (dy g - x r^2 <dy g, x> / d), with x r = normed
    grad_diff = rstd[:, None] * (grad_scaled - normed * (tl.sum(grad_scaled * normed, axis=1) / d)[:, None])
    grad_lambda1 = -tl.sum(tl.sum(grad_diff * minus, axis=1), axis=0)

    grad_u = _plus_rows(grad_u_ptr, b, head, i, sd_b, sd_h, sd_i, sd_j, col, ALIGN)
    tl.store(grad_u, grad_diff.to(grad_u_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_u + n * sd_i, (-lambda1 * grad_diff).to(grad_u_ptr.dtype.element_ty), mask=mask)
    partial = partial_ptr + program * (d + 2)
    tl.store(partial + col, tl.sum(grad_contrast * normed, axis=0) * scale, mask=col_ok)
    tl.store(partial + d, grad_lambda1)
    tl.store(partial + d + 1, grad_lambda2)


@triton.jit
def lambda_vector_gradients(grad_lambda, q1_ptr, k1_ptr, q2_ptr, k2_ptr, out_ptr, d, BLOCK_D: tl.constexpr):
    """Rows q1, k1, q2, k2 of out: the gradients of exp(<q1, k1>) - exp(<q2, k2>) given the lambda's gradient."""
    col = tl.arange(0, BLOCK_D)
    ok = col < d
    q1, k1 = load_vector(q1_ptr, col, ok), load_vector(k1_ptr, col, ok)
    q2, k2 = load_vector(q2_ptr, col, ok), load_vector(k2_ptr, col, ok)
    grad_first = grad_lambda * tl.exp(tl.sum(q1 * k1, axis=0))
    grad_second = -grad_lambda * tl.exp(tl.sum(q2 * k2, axis=0))
    tl.store(out_ptr + col, grad_first * k1, mask=ok)  # d/dq1 exp(<q1, k1>) = exp(<q1, k1>) k1
    tl.store(out_ptr + d + col, grad_first * q1, mask=ok)
    tl.store(out_ptr + 2 * d + col, grad_second * k2, mask=ok)
    tl.store(out_ptr + 3 * d + col, grad_second * q2, mask=ok)


@triton.jit
def contrast_values_finish(total_ptr, s1q1, s1k1, s1q2, s1k2, s2q1, s2k1, s2q2, s2k2, out_ptr, d: tl.constexpr,
                           BLOCK_D: tl.constexpr):
    """One program, from the summed partial row [dgain (d), dl1, dl2]: out = [dgain; the 8 lambda vectors'
    gradients], [9, d]."""
    col = tl.arange(0, BLOCK_D)
    tl.store(out_ptr + col, tl.load(total_ptr + col, mask=col < d), mask=col < d)
    lambda_vector_gradients(tl.load(total_ptr + d), s1q1, s1k1, s1q2, s1k2, out_ptr + d, d, BLOCK_D)
    lambda_vector_gradients(tl.load(total_ptr + d + 1), s2q1, s2k1, s2q2, s2k2, out_ptr + 5 * d, d, BLOCK_D)


@triton.jit
def norm_merge_local_forward(
    o_ptr, v_ptr, gain_ptr, conv_weight_ptr, conv_bias_ptr, out_ptr, rstd_ptr,
    N, H, W, heads, d: tl.constexpr,
    so_b, so_h, so_t, so_j, sv_b, sv_h, sv_t, sv_j,
    scale, eps,
    HAS_LOCAL: tl.constexpr, ALIGN: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Stage II's epilogue: out[b, t, head*d + j] = RMSNorm(O) * gain * scale + DepthwiseConv3x3(V) + bias.

    O and V are [B, h, N, d] (strided views), out is [B, N, C] contiguous; program (tile, head, b).
    """
    tile, head, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)  # B N 3C may pass 2^31
    token = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    col = tl.arange(0, BLOCK_D)
    token_ok, col_ok = token < N, col < d
    mask = token_ok[:, None] & col_ok[None, :]
    o_head = o_ptr + tl.multiple_of(b * so_b + head * so_h, ALIGN)  # the hint keeps 16-byte loads when d = 72
    o = tl.load(o_head + token[:, None] * so_t + col[None, :] * so_j, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(o * o, axis=1) / d + eps)
    gain = tl.load(gain_ptr + col, mask=col_ok, other=0.0).to(tl.float32) * scale
    out = o * rstd[:, None] * gain[None, :]
    channel = head * d + col
    if HAS_LOCAL:
        y, x = token // W, token % W
        v_head = v_ptr + tl.multiple_of(b * sv_b + head * sv_h, ALIGN) + col[None, :] * sv_j
        out += tl.load(conv_bias_ptr + channel, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        for tap in tl.static_range(9):
            yy, xx = y + tap // 3 - 1, x + tap % 3 - 1
            inside = token_ok & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            v = tl.load(v_head + (yy * W + xx)[:, None] * sv_t, mask=inside[:, None] & col_ok[None, :], other=0.0)
            weight = tl.load(conv_weight_ptr + channel * 9 + tap, mask=col_ok, other=0.0).to(tl.float32)
            out += v.to(tl.float32) * weight[None, :]
    C = heads * d
    tl.store(out_ptr + b * N * C + token[:, None] * C + channel[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + (b * heads + head) * N + token, rstd, mask=token_ok)


@triton.jit
def norm_merge_local_backward(
    grad_ptr, o_ptr, v_ptr, rstd_ptr, gain_ptr, conv_weight_ptr, grad_o_ptr, grad_v_ptr, partial_ptr,
    N, H, W, heads, d: tl.constexpr, groups,
    sg_b, sg_t, sg_c, so_b, so_h, so_t, so_j, sv_b, sv_h, sv_t, sv_j, sd_b, sd_h, sd_t, sd_j,
    scale,
    HAS_LOCAL: tl.constexpr, ALIGN: tl.constexpr, TOKENS: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Gradients of `norm_merge_local_forward`: dO and dV written (dV = the transposed convolution of the
    gradient), and per program (group of TOKENS tokens, b) a partial row [dgain (C), dbias (C), dweight (C*9)].
    Each program walks its TOKENS tokens in tiles, so the partial rows stay few (B * N / TOKENS)."""
    group, head, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)  # B N 3C may pass 2^31
    col = tl.arange(0, BLOCK_D)
    col_ok = col < d
    C = heads * d
    channel = head * d + col
    grad_head = grad_ptr + b * sg_b + channel[None, :] * sg_c
    v_head = v_ptr + tl.multiple_of(b * sv_b + head * sv_h, ALIGN) + col[None, :] * sv_j
    o_head = o_ptr + tl.multiple_of(b * so_b + head * so_h, ALIGN)
    out_head = tl.multiple_of(b * sd_b + head * sd_h, ALIGN)  # grad_o and grad_v share one layout
    gain = tl.load(gain_ptr + col, mask=col_ok, other=0.0).to(tl.float32) * scale
    taps = tl.arange(0, 16)  # 9 taps, padded to a power of 2
    sum_gain = tl.zeros((BLOCK_D,), dtype=tl.float32)
    sum_bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    sum_weight = tl.zeros((16, BLOCK_D), dtype=tl.float32)
    for offset in range(0, TOKENS, BLOCK_T):
        token = group * TOKENS + offset + tl.arange(0, BLOCK_T)
        token_ok = token < N
        mask = token_ok[:, None] & col_ok[None, :]
        grad = tl.load(grad_head + token[:, None] * sg_t, mask=mask, other=0.0).to(tl.float32)
        o = tl.load(o_head + token[:, None] * so_t + col[None, :] * so_j, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + (b * heads + head) * N + token, mask=token_ok, other=0.0)
        normed = o * rstd[:, None]
        grad_scaled = grad * gain[None, :]
        # d/dx [x r g] = r (dy g - x r^2 <dy g, x> / d), with x r = normed
        grad_o = rstd[:, None] * (grad_scaled - normed * (tl.sum(grad_scaled * normed, axis=1) / d)[:, None])
        tl.store(grad_o_ptr + out_head + token[:, None] * sd_t + col[None, :] * sd_j,
                 grad_o.to(grad_o_ptr.dtype.element_ty), mask=mask)
        sum_gain += tl.sum(grad * normed, axis=0)
        if HAS_LOCAL:
            sum_bias += tl.sum(grad, axis=0)
            y, x = token // W, token % W
            grad_v = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
            for tap in tl.static_range(9):
                dy, dx = tap // 3 - 1, tap % 3 - 1
                # out[p] += w[tap] v[p + offset]: the weight's gradient pairs the gradient at p with V shifted ...
                yy, xx = y + dy, x + dx
                inside = token_ok & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
                v = tl.load(v_head + (yy * W + xx)[:, None] * sv_t, mask=inside[:, None] & col_ok[None, :],
                            other=0.0)
                sum_weight += tl.where(taps[:, None] == tap, tl.sum(grad * v.to(tl.float32), axis=0)[None, :], 0.0)
                # ... and V's gradient at p gathers the gradient at p - offset
                yy, xx = y - dy, x - dx
                inside = token_ok & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
                shifted = tl.load(grad_head + (yy * W + xx)[:, None] * sg_t,
                                  mask=inside[:, None] & col_ok[None, :], other=0.0)
                weight = tl.load(conv_weight_ptr + channel * 9 + tap, mask=col_ok, other=0.0).to(tl.float32)
                grad_v += shifted.to(tl.float32) * weight[None, :]
            tl.store(grad_v_ptr + out_head + token[:, None] * sd_t + col[None, :] * sd_j,
                     grad_v.to(grad_v_ptr.dtype.element_ty), mask=mask)
    partial = partial_ptr + (b * groups + group) * (11 * C if HAS_LOCAL else C)
    tl.store(partial + channel, sum_gain * scale, mask=col_ok)
    if HAS_LOCAL:
        tl.store(partial + C + channel, sum_bias, mask=col_ok)
        tl.store(partial + 2 * C + channel[None, :] * 9 + taps[:, None], sum_weight,
                 mask=(taps < 9)[:, None] & col_ok[None, :])
