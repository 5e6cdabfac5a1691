"""VCA follows docs/vca.md: fast path = reference path, lambda_init, parameter and FLOP claims."""
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from gen.models import Attention, VisualContrastAttention, lambda_init_for_layer


def randomised(module: VisualContrastAttention) -> VisualContrastAttention:
    """Move the norm gains and lambdas off their initial values so that every term is exercised."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "lambda" in name:
                p.add_(0.3 * torch.randn_like(p))
    return module.double()


@pytest.mark.parametrize("grid, pool", [((8, 8), 4), ((6, 10), 3), ((7, 5), (3, 2)), ((9, 9), None)])
@pytest.mark.parametrize("stage2_softmax", ["joint", "separate"])
@pytest.mark.parametrize("local_term", [True, False])
def test_fast_path_equals_reference(grid, pool, stage2_softmax, local_term):
    vca = randomised(VisualContrastAttention(32, 4, grid, layer_index=3, pool_size=pool,
                                             stage2_softmax=stage2_softmax, local_term=local_term))
    x = torch.randn(2, grid[0] * grid[1], 32, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, grid[0] * grid[1], 32, dtype=torch.float64)

    results = []
    for path in (vca.forward, vca.reference_forward):
        vca.zero_grad()
        x.grad = None
        out = path(x)
        out.backward(grad_out)
        results.append([out.detach(), x.grad.clone()] + [p.grad.clone() for p in vca.parameters()])
    for fast, reference in zip(*results, strict=True):
        torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-10)


def test_fast_path_equals_reference_in_float32():
    vca = VisualContrastAttention(64, 4, (16, 16), layer_index=1)
    x = torch.randn(2, 256, 64)
    torch.testing.assert_close(vca(x), vca.reference_forward(x), rtol=1e-5, atol=1e-5)


def test_attention_maps_are_distributions_and_consistent_with_output():
    vca = VisualContrastAttention(32, 4, (8, 8), pool_size=4)
    x = torch.randn(2, 64, 32)
    out, maps = vca(x, return_attention_maps=True)
    assert maps["stage1"].shape == (2, 4, 2 * 16, 64) and maps["stage2"].shape == (2, 4, 64, 2 * 16)
    torch.testing.assert_close(maps["stage1"].sum(-1), torch.ones(2, 4, 32))
    torch.testing.assert_close(maps["stage2"].sum(-1), torch.ones(2, 4, 64))  # joint: one softmax over 2n
    torch.testing.assert_close(out, vca(x), rtol=1e-5, atol=1e-6)


def test_lambda_init_follows_the_formula():
    for layer in (0, 1, 5, 27):
        expected = 0.8 - 0.6 * math.exp(-0.3 * layer)
        assert lambda_init_for_layer(layer) == pytest.approx(expected, abs=1e-12)
        vca = VisualContrastAttention(32, 4, (8, 8), layer_index=layer)
        assert vca.lambda_init == pytest.approx(expected, abs=1e-12)
    assert lambda_init_for_layer(0) == pytest.approx(0.2)


def test_lambda_is_the_differential_of_exponentials():
    vca = VisualContrastAttention(32, 4, (8, 8), layer_index=2)
    lam = vca.stage1_lambda
    expected = (torch.exp((lam.q1 * lam.k1).sum()) - torch.exp((lam.q2 * lam.k2).sum())
                + lambda_init_for_layer(2))
    torch.testing.assert_close(lam(), expected)


def test_default_pool_size_and_errors():
    assert VisualContrastAttention(32, 4, (16, 16)).pool_size == (8, 8)
    assert VisualContrastAttention(32, 4, (32, 32)).pool_size == (8, 8)
    assert VisualContrastAttention(32, 4, (8, 8)).pool_size == (4, 4)
    with pytest.raises(ValueError, match="pooled grid 8x8 does not fit the 4x4 token grid"):
        VisualContrastAttention(32, 4, (4, 4), pool_size=8)
    with pytest.raises(ValueError, match="does not fit the 1x1 token grid"):
        VisualContrastAttention(32, 4, (1, 1))
    with pytest.raises(ValueError, match="got 10 tokens"):
        VisualContrastAttention(32, 4, (4, 4))(torch.randn(1, 10, 32))


def test_deit_tiny_parameter_overhead_below_0_3m():
    def stack(make):
        return torch.nn.ModuleList([make(i) for i in range(12)])

    mhsa = stack(lambda i: Attention(192, 3))
    vca = stack(lambda i: VisualContrastAttention(192, 3, (14, 14), layer_index=i, pool_size=7))
    extra = sum(p.numel() for p in vca.parameters()) - sum(p.numel() for p in mhsa.parameters())
    assert vca[0].num_contrast == 49
    assert 0 < extra < 300_000


def attention_multiply_adds(module, tokens: int, dim: int) -> int:
    """Multiply-adds of the attention products alone (batched matmuls, with sdpa decomposed into math)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(torch.randn(1, tokens, dim))
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    return counts["aten.bmm"] // 2


def test_multiply_adds_equal_mhsa_at_quarter_tokens_and_grow_linearly():
    C = 96
    mhsa = attention_multiply_adds(Attention(C, 3), 256, C)
    vca = attention_multiply_adds(VisualContrastAttention(C, 3, (16, 16), pool_size=8), 256, C)  # n = N / 4
    assert mhsa == 2 * 256**2 * C
    assert vca == mhsa
    per_side = {side: attention_multiply_adds(VisualContrastAttention(C, 3, (side, side), pool_size=8), side**2, C)
                for side in (16, 32, 64)}
    for side, count in per_side.items():
        assert count == 8 * 64 * side**2 * C  # 8 n N C at fixed n: linear in N


def test_ablations_build_and_run():
    x = torch.randn(2, 64, 32)
    learned = VisualContrastAttention(32, 4, (8, 8), contrast_tokens="learned")
    shared = VisualContrastAttention(32, 4, (8, 8), shared_pos_embed=True)
    assert shared.contrast_pos_minus is None
    for vca in (learned, shared):
        torch.testing.assert_close(vca(x), vca.reference_forward(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grid, pool", [((8, 8), 4), ((6, 10), 3), ((7, 5), (3, 2))])
def test_pooling_equals_adaptive_avg_pool(grid, pool):
    vca = VisualContrastAttention(32, 4, grid, pool_size=pool)
    q = torch.randn(2, 4, grid[0] * grid[1], 8)
    expected = torch.nn.functional.adaptive_avg_pool2d(vca._to_grid(q), vca.pool_size)
    expected = expected.view(2, 4, 8, -1).transpose(-1, -2)
    torch.testing.assert_close(vca._pool(q), expected)


@pytest.mark.parametrize("with_local", [True, False])
def test_fused_norm_merge_add_gradients(with_local):
    """The fast path's hand-written backward against finite differences, on a non-contiguous input."""
    from gen.models.vca import NormMergeAdd

    x = torch.randn(2, 5, 3, 4, dtype=torch.float64).transpose(1, 2).requires_grad_()  # [B, h, N, d], strided
    gain = torch.randn(4, dtype=torch.float64, requires_grad=True)
    local = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True) if with_local else None
    assert torch.autograd.gradcheck(lambda *a: NormMergeAdd.apply(*a, 1e-5), (x, gain, local))
