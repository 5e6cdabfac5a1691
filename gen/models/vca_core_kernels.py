"""Triton kernels of VCA's core in one pass per (image, head): stage I's attention of the 2n contrast tokens over
all N keys (an online softmax over key tiles), the differential combination and RMS norm that make the contrast
values Vc, and stage II's attention of every query over the 2n contrast tokens, without writing the contrast
values or either attention matrix to memory. The backward recomputes them, as flash attention does, from the
small tensors the forward keeps: stage I's output U ([2n, d] per head), its log-sum-exps, the norm's 1/rms and
stage II's log-sum-exps.

One program holds one (image, head): its contrast tokens T+ and T- (rows of [T+; T-]) and, in stage II, its
contrast values stay in registers while the program walks the N tokens in tiles. Every tensor is read through
its strides and every sum is in float32. The gain's and the lambdas' gradients are one row of partial sums per
program, summed by the caller (no atomics: the same result on every run).
"""
import triton
import triton.language as tl


@triton.jit
def load_vector(ptr, col, ok):
    return tl.load(ptr + col, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def differential_lambda(q1_ptr, k1_ptr, q2_ptr, k2_ptr, lambda_init, d, BLOCK_D: tl.constexpr):
    """exp(<q1, k1>) - exp(<q2, k2>) + lambda_init, from the four vectors of `DifferentialLambda`."""
    col = tl.arange(0, BLOCK_D)
    ok = col < d
    q1, k1 = load_vector(q1_ptr, col, ok), load_vector(k1_ptr, col, ok)
    q2, k2 = load_vector(q2_ptr, col, ok), load_vector(k2_ptr, col, ok)
    return tl.exp(tl.sum(q1 * k1, axis=0)) - tl.exp(tl.sum(q2 * k2, axis=0)) + lambda_init


@triton.jit
def _row_pointers(ptr, b, head, s_b, s_h, s_i, s_j, row, col, ALIGN: tl.constexpr):
    """Pointers to rows `row` of a [B, h, S, d] tensor; ALIGN: what divides every row's start (the hint that lets
    a head of 72 load in vectors)."""
    return ptr + tl.multiple_of(b * s_b + head * s_h + row * s_i, ALIGN)[:, None] + col[None, :] * s_j


@triton.jit
def _rows(ptr, b, head, s_b, s_h, s_i, s_j, row, col, mask, ALIGN: tl.constexpr):
    """A [rows, BLOCK_D] tile of a [B, h, S, d] tensor, zero outside `mask`."""
    return tl.load(_row_pointers(ptr, b, head, s_b, s_h, s_i, s_j, row, col, ALIGN), mask=mask, other=0.0)


@triton.jit
def _halves(ptr, b, head, s_b, s_h, s_i, s_j, n, c, col, mask, ALIGN: tl.constexpr):
    """The plus rows c and the minus rows n + c of a [B, h, 2n, d] tensor ([T+; T-], or stage I's output)."""
    return (_rows(ptr, b, head, s_b, s_h, s_i, s_j, c, col, mask, ALIGN),
            _rows(ptr, b, head, s_b, s_h, s_i, s_j, c + n, col, mask, ALIGN))


@triton.jit
def _store_rows(ptr, value, b, head, s_b, s_h, s_i, s_j, row, col, mask, ALIGN: tl.constexpr):
    tl.store(_row_pointers(ptr, b, head, s_b, s_h, s_i, s_j, row, col, ALIGN), value.to(ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """a @ b, summed in float32. "upcast": Triton's interpreter multiplies bf16 tiles wrongly, so they are
    multiplied as float32 (their products are exact in float32, as a GPU's bf16 MMA makes them)."""
    if PRECISION == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _scores(a, b_rows, sm_scale, PRECISION: tl.constexpr):
    """a @ b_rows^T * sm_scale in float32."""
    return _dot(a, tl.trans(b_rows), PRECISION) * sm_scale


@triton.jit
def _contrast_values(u_plus, u_minus, rstd, gain, lambda1, norm_scale):
    """Vc = (U+ - l1 U-) / rms * gain * (1 - lambda_init), and the difference it normalises."""
    diff = u_plus - lambda1 * u_minus
    return diff * rstd[:, None] * gain[None, :] * norm_scale, diff


@triton.jit
def _softmax(scores, lse):
    """A softmax recomputed from its scores and the log-sum-exp of each row that the forward kept."""
    return tl.exp(scores - lse[:, None])


@triton.jit
def vca_core_forward(
    q_ptr, k_ptr, v_ptr, t_ptr, gain_ptr, s1q1, s1k1, s1q2, s1k2, s2q1, s2k1, s2q2, s2k2,
    o_ptr, u_ptr, lse1_ptr, lse2_ptr, rstd_ptr,
    N, n, d: tl.constexpr, heads,
    sq_b, sq_h, sq_i, sq_j, sk_b, sk_h, sk_i, sk_j, sv_b, sv_h, sv_i, sv_j, st_b, st_h, st_i, st_j,
    so_b, so_h, so_i, so_j, su_b, su_h, su_i, su_j,
    lambda_init, sm_scale, norm_scale, eps,
    JOINT: tl.constexpr, PRECISION: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """o [B, h, N, d]: stage II's output before its norm; u [B, h, 2n, d]: stage I's; lse1 [B, h, 2n], lse2
    [B, h, 1 (joint) or 2, N] and rstd [B, h, n] in float32: what the backward recomputes from."""
    program = tl.program_id(0)
    b, head = program // heads, program % heads
    lse2_row = lse2_ptr + program * N * (1 if JOINT else 2)
    c, col = tl.arange(0, BLOCK_C), tl.arange(0, BLOCK_D)
    c_ok, col_ok = c < n, col < d
    c_mask = c_ok[:, None] & col_ok[None, :]
    t_plus, t_minus = _halves(t_ptr, b, head, st_b, st_h, st_i, st_j, n, c, col, c_mask, ALIGN)
    dtype = t_plus.dtype

    # Stage I: both halves of [T+; T-] over all keys, each with its online softmax.
    m_plus = tl.full((BLOCK_C,), float("-inf"), tl.float32)
    m_minus = tl.full((BLOCK_C,), float("-inf"), tl.float32)
    l_plus, l_minus = tl.zeros((BLOCK_C,), tl.float32), tl.zeros((BLOCK_C,), tl.float32)
    acc_plus = tl.zeros((BLOCK_C, BLOCK_D), tl.float32)
    acc_minus = tl.zeros((BLOCK_C, BLOCK_D), tl.float32)
    for start in range(0, N, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        j_ok = j < N
        j_mask = j_ok[:, None] & col_ok[None, :]
        keys = _rows(k_ptr, b, head, sk_b, sk_h, sk_i, sk_j, j, col, j_mask, ALIGN)
        values = _rows(v_ptr, b, head, sv_b, sv_h, sv_i, sv_j, j, col, j_mask, ALIGN)
        s_plus = tl.where(j_ok[None, :], _scores(t_plus, keys, sm_scale, PRECISION), float("-inf"))
        s_minus = tl.where(j_ok[None, :], _scores(t_minus, keys, sm_scale, PRECISION), float("-inf"))
        new_plus = tl.maximum(m_plus, tl.max(s_plus, axis=1))
        new_minus = tl.maximum(m_minus, tl.max(s_minus, axis=1))
        p_plus = tl.exp(s_plus - new_plus[:, None])
        p_minus = tl.exp(s_minus - new_minus[:, None])
        alpha_plus, alpha_minus = tl.exp(m_plus - new_plus), tl.exp(m_minus - new_minus)
        l_plus = l_plus * alpha_plus + tl.sum(p_plus, axis=1)
        l_minus = l_minus * alpha_minus + tl.sum(p_minus, axis=1)
        acc_plus = acc_plus * alpha_plus[:, None] + _dot(p_plus.to(dtype), values, PRECISION)
        acc_minus = acc_minus * alpha_minus[:, None] + _dot(p_minus.to(dtype), values, PRECISION)
        m_plus, m_minus = new_plus, new_minus
    # U as stored (rounded to the storage dtype), so that the backward recomputes exactly these contrast values.
    u_plus = (acc_plus / l_plus[:, None]).to(dtype)
    u_minus = (acc_minus / l_minus[:, None]).to(dtype)
    _store_rows(u_ptr, u_plus, b, head, su_b, su_h, su_i, su_j, c, col, c_mask, ALIGN)
    _store_rows(u_ptr, u_minus, b, head, su_b, su_h, su_i, su_j, c + n, col, c_mask, ALIGN)
    stats = program * 2 * n
    tl.store(lse1_ptr + stats + c, m_plus + tl.log(l_plus), mask=c_ok)
    tl.store(lse1_ptr + stats + n + c, m_minus + tl.log(l_minus), mask=c_ok)

    # The contrast values, kept in registers for stage II.
    lambda1 = differential_lambda(s1q1, s1k1, s1q2, s1k2, lambda_init, d, BLOCK_D)
    lambda2 = differential_lambda(s2q1, s2k1, s2q2, s2k2, lambda_init, d, BLOCK_D)
    gain = tl.load(gain_ptr + col, mask=col_ok, other=0.0).to(tl.float32)
    diff = u_plus.to(tl.float32) - lambda1 * u_minus.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(diff * diff, axis=1) / d + eps)
    tl.store(rstd_ptr + program * n + c, rstd, mask=c_ok)
    contrast_values = _contrast_values(u_plus.to(tl.float32), u_minus.to(tl.float32), rstd, gain, lambda1,
                                       norm_scale)[0].to(dtype)

    # Stage II: every tile of queries over the 2n contrast tokens; a whole row of scores fits in registers.
    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        i_ok = i < N
        i_mask = i_ok[:, None] & col_ok[None, :]
        queries = _rows(q_ptr, b, head, sq_b, sq_h, sq_i, sq_j, i, col, i_mask, ALIGN)
        s_plus = tl.where(c_ok[None, :], _scores(queries, t_plus, sm_scale, PRECISION), float("-inf"))
        s_minus = tl.where(c_ok[None, :], _scores(queries, t_minus, sm_scale, PRECISION), float("-inf"))
        top_plus, top_minus = tl.max(s_plus, axis=1), tl.max(s_minus, axis=1)
        if JOINT:
            top_plus = tl.maximum(top_plus, top_minus)
            top_minus = top_plus
        e_plus, e_minus = tl.exp(s_plus - top_plus[:, None]), tl.exp(s_minus - top_minus[:, None])
        sutop_plus, sutop_minus = tl.sum(e_plus, axis=1), tl.sum(e_minus, axis=1)
        if JOINT:
            sutop_plus = sutop_plus + sutop_minus
            sutop_minus = sutop_plus
        weights = e_plus / sutop_plus[:, None] - lambda2 * e_minus / sutop_minus[:, None]  # A+ - l2 A-
        out = _dot(weights.to(dtype), contrast_values, PRECISION)
        _store_rows(o_ptr, out, b, head, so_b, so_h, so_i, so_j, i, col, i_mask, ALIGN)
        tl.store(lse2_row + i, top_plus + tl.log(sutop_plus), mask=i_ok)
        if not JOINT:
            tl.store(lse2_row + N + i, top_minus + tl.log(sutop_minus), mask=i_ok)


@triton.jit
def vca_core_backward(
    grad_ptr, q_ptr, k_ptr, v_ptr, t_ptr, gain_ptr, s1q1, s1k1, s1q2, s1k2, s2q1, s2k1, s2q2, s2k2,
    u_ptr, lse1_ptr, lse2_ptr, rstd_ptr,
    dq_ptr, dk_ptr, dv_ptr, dt_ptr, partial_ptr,
    N, n, d: tl.constexpr, heads,
    sg_b, sg_h, sg_i, sg_j, sq_b, sq_h, sq_i, sq_j, sk_b, sk_h, sk_i, sk_j, sv_b, sv_h, sv_i, sv_j,
    st_b, st_h, st_i, st_j, su_b, su_h, su_i, su_j,
    sdq_b, sdq_h, sdq_i, sdq_j, sdk_b, sdk_h, sdk_i, sdk_j, sdv_b, sdv_h, sdv_i, sdv_j,
    sdt_b, sdt_h, sdt_i, sdt_j,
    lambda_init, sm_scale, norm_scale,
    JOINT: tl.constexpr, PRECISION: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dq, dk, dv, d[T+; T-] of one (image, head) from the gradient of o, and a partial row [d gain (d), d lambda1,
    d lambda2]. Order: stage II (its gradient reaches Vc), the contrast values' norm, stage I."""
    program = tl.program_id(0)
    b, head = program // heads, program % heads
    lse2_row = lse2_ptr + program * N * (1 if JOINT else 2)
    c, col = tl.arange(0, BLOCK_C), tl.arange(0, BLOCK_D)
    c_ok, col_ok = c < n, col < d
    c_mask = c_ok[:, None] & col_ok[None, :]
    t_plus, t_minus = _halves(t_ptr, b, head, st_b, st_h, st_i, st_j, n, c, col, c_mask, ALIGN)
    dtype = t_plus.dtype
    u_plus, u_minus = _halves(u_ptr, b, head, su_b, su_h, su_i, su_j, n, c, col, c_mask, ALIGN)
    u_plus, u_minus = u_plus.to(tl.float32), u_minus.to(tl.float32)
    lambda1 = differential_lambda(s1q1, s1k1, s1q2, s1k2, lambda_init, d, BLOCK_D)
    lambda2 = differential_lambda(s2q1, s2k1, s2q2, s2k2, lambda_init, d, BLOCK_D)
    gain = tl.load(gain_ptr + col, mask=col_ok, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + program * n + c, mask=c_ok, other=0.0)
    contrast_values, diff = _contrast_values(u_plus, u_minus, rstd, gain, lambda1, norm_scale)
    contrast_values = contrast_values.to(dtype)

    # Stage II backward, tile by tile of queries: dq (its stage-II part), and sums for dT and dVc.
    dt_plus = tl.zeros((BLOCK_C, BLOCK_D), tl.float32)
    dt_minus = tl.zeros((BLOCK_C, BLOCK_D), tl.float32)
    d_values = tl.zeros((BLOCK_C, BLOCK_D), tl.float32)
    d_lambda2 = tl.zeros((BLOCK_C,), tl.float32)
    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        i_ok = i < N
        i_mask = i_ok[:, None] & col_ok[None, :]
        queries = _rows(q_ptr, b, head, sq_b, sq_h, sq_i, sq_j, i, col, i_mask, ALIGN)
        grad = _rows(grad_ptr, b, head, sg_b, sg_h, sg_i, sg_j, i, col, i_mask, ALIGN)
        s_plus = tl.where(c_ok[None, :], _scores(queries, t_plus, sm_scale, PRECISION), float("-inf"))
        s_minus = tl.where(c_ok[None, :], _scores(queries, t_minus, sm_scale, PRECISION), float("-inf"))
        lse_plus = tl.load(lse2_row + i, mask=i_ok, other=0.0)
        lse_minus = lse_plus
        if not JOINT:
            lse_minus = tl.load(lse2_row + N + i, mask=i_ok, other=0.0)
        a_plus, a_minus = _softmax(s_plus, lse_plus), _softmax(s_minus, lse_minus)  # joint: one lse for both
        g = _dot(grad, tl.trans(contrast_values), PRECISION)  # dO Vc^T: d(A+), and -d(A-)/l2
        g_plus, g_minus = tl.sum(a_plus * g, axis=1), tl.sum(a_minus * g, axis=1)
        if JOINT:  # one softmax: both halves share the row's sum of A dA
            shared = g_plus - lambda2 * g_minus
            ds_plus = a_plus * (g - shared[:, None])
            ds_minus = a_minus * (-lambda2 * g - shared[:, None])
        else:
            ds_plus = a_plus * (g - g_plus[:, None])
            ds_minus = -lambda2 * a_minus * (g - g_minus[:, None])
        d_lambda2 -= tl.sum(a_minus * g, axis=0)
        ds_plus, ds_minus = ds_plus.to(dtype), ds_minus.to(dtype)
        dq = (_dot(ds_plus, t_plus, PRECISION) + _dot(ds_minus, t_minus, PRECISION)) * sm_scale
        _store_rows(dq_ptr, dq, b, head, sdq_b, sdq_h, sdq_i, sdq_j, i, col, i_mask, ALIGN)
        dt_plus += _dot(tl.trans(ds_plus), queries, PRECISION) * sm_scale
        dt_minus += _dot(tl.trans(ds_minus), queries, PRECISION) * sm_scale
        weights = (a_plus - lambda2 * a_minus).to(dtype)
        d_values += _dot(tl.trans(weights), grad, PRECISION)

    # The contrast values' RMS norm: d Vc -> d(U+ - l1 U-) -> dU+, dU-, the gain and lambda1.
    scaled_gain = gain * norm_scale
    d_normed = d_values * scaled_gain[None, :]
    d_gain = tl.sum(d_values * diff * rstd[:, None], axis=0) * norm_scale
    dot = tl.sum(d_normed * diff, axis=1)
    d_diff = rstd[:, None] * (d_normed - diff * (rstd * rstd * dot / d)[:, None])
    du_plus, du_minus = d_diff, -lambda1 * d_diff
    d_lambda1 = -tl.sum(tl.sum(d_diff * u_minus, axis=1), axis=0)
    delta_plus, delta_minus = tl.sum(du_plus * u_plus, axis=1), tl.sum(du_minus * u_minus, axis=1)
    lse_plus = tl.load(lse1_ptr + program * 2 * n + c, mask=c_ok, other=0.0)
    lse_minus = tl.load(lse1_ptr + program * 2 * n + n + c, mask=c_ok, other=0.0)
    du_plus, du_minus = du_plus.to(dtype), du_minus.to(dtype)

    # Stage I backward, tile by tile of keys: dk, dv, and the rest of dT.
    for start in range(0, N, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        j_ok = j < N
        j_mask = j_ok[:, None] & col_ok[None, :]
        pair_ok = c_ok[:, None] & j_ok[None, :]
        keys = _rows(k_ptr, b, head, sk_b, sk_h, sk_i, sk_j, j, col, j_mask, ALIGN)
        values = _rows(v_ptr, b, head, sv_b, sv_h, sv_i, sv_j, j, col, j_mask, ALIGN)
        p_plus = tl.where(pair_ok, _softmax(_scores(t_plus, keys, sm_scale, PRECISION), lse_plus), 0.0)
        p_minus = tl.where(pair_ok, _softmax(_scores(t_minus, keys, sm_scale, PRECISION), lse_minus), 0.0)
        ds_plus = (p_plus * (_scores(du_plus, values, 1.0, PRECISION) - delta_plus[:, None])).to(dtype)
        ds_minus = (p_minus * (_scores(du_minus, values, 1.0, PRECISION) - delta_minus[:, None])).to(dtype)
        dk = (_dot(tl.trans(ds_plus), t_plus, PRECISION) + _dot(tl.trans(ds_minus), t_minus, PRECISION)) * sm_scale
        dv = (_dot(tl.trans(p_plus.to(dtype)), du_plus, PRECISION)
              + _dot(tl.trans(p_minus.to(dtype)), du_minus, PRECISION))
        _store_rows(dk_ptr, dk, b, head, sdk_b, sdk_h, sdk_i, sdk_j, j, col, j_mask, ALIGN)
        _store_rows(dv_ptr, dv, b, head, sdv_b, sdv_h, sdv_i, sdv_j, j, col, j_mask, ALIGN)
        dt_plus += _dot(ds_plus, keys, PRECISION) * sm_scale
        dt_minus += _dot(ds_minus, keys, PRECISION) * sm_scale

    _store_rows(dt_ptr, dt_plus, b, head, sdt_b, sdt_h, sdt_i, sdt_j, c, col, c_mask, ALIGN)
    _store_rows(dt_ptr, dt_minus, b, head, sdt_b, sdt_h, sdt_i, sdt_j, c + n, col, c_mask, ALIGN)
    row = partial_ptr + program * (d + 2)
    tl.store(row + col, d_gain, mask=col_ok)
    tl.store(row + d, d_lambda1)
    tl.store(row + d + 1, tl.sum(d_lambda2, axis=0))
