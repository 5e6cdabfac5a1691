"""VCA's fused path (Triton epilogues, pooling as a matmul) equals the reference path, forward and every gradient.

On a machine without CUDA the Triton kernels run through Triton's interpreter (TRITON_INTERPRET=1, set here
before the kernels are defined); on a GPU they run compiled. Shapes are small and cover a non-square grid, a
pooled grid that does not divide it, head widths that are not powers of 2, and every option of the module.
"""
import contextlib
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gen.models import VisualContrastAttention, create_model, set_vca_kernels, vca_core, vca_fused
from gen.models.lightning import QueryKeyTransform
from gen.models.vca import auto_takes_triton
from gen.models.vca_fused import pooling_bins

pytestmark = pytest.mark.skipif(not vca_fused.triton_available(), reason="this torch build ships without Triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True, scope="module")
def triton_kernels():
    """On the CPU, the interpreter: conftest.py sets TRITON_INTERPRET before anything imports Triton. On a GPU,
    TF32 off (a training test may leave it on): the fused path pools by a matmul, the torch path exactly."""
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("TRITON_INTERPRET=1 is needed on a machine without CUDA (tests/conftest.py sets it)")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = tf32


def randomised(module):
    """Norm gains and lambdas moved off their initial values, so that every term is exercised."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "lambda" in name:
                p.add_(0.3 * torch.randn_like(p))
    return module.to(DEVICE)


def outputs_and_gradients(forward, module, x, grad_out, autocast_dtype=None):
    module.zero_grad()
    x.grad = None
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        out = forward(x)
    out.float().backward(grad_out)
    return {"output": out.detach().double(), "input": x.grad.double(),
            **{name: p.grad.double() for name, p in module.named_parameters()}}


def relative_errors(actual: dict, expected: dict) -> dict:
    assert actual.keys() == expected.keys()
    return {name: float((actual[name] - expected[name]).abs().max() / expected[name].abs().max().clamp_min(1e-30))
            for name in expected}


def same_attention_arithmetic(enabled: bool):
    """Both paths on SDPA's math backend. The lambdas' float32 gradients are sums with much cancellation
    (errors of 1e-4 relative on learned tokens): which SDPA kernel a path gets (CPU flash 5e-7, math 1.3e-4;
    CUDA's memory-efficient or math, chosen by the tensors' layout) would decide them, not the Triton kernels."""
    return sdpa_kernel([SDPBackend.MATH]) if enabled else contextlib.nullcontext()


CASES = {  # (dim, heads, grid, pool, options)
    "default": (48, 4, (8, 8), 4, {}),
    "non-square, pool not dividing, d=12": (36, 3, (6, 10), 4, {}),
    "separate softmax": (32, 2, (7, 5), (3, 2), {"stage2_softmax": "separate"}),
    "no local term": (32, 4, (6, 6), 3, {"local_term": False}),
    "learned tokens, shared embedding": (32, 4, (6, 6), 3, {"contrast_tokens": "learned", "shared_pos_embed": True}),
    "more tokens than one program walks (289)": (16, 2, (17, 17), 4, {}),
    "LightningDiT's QK-norm and RoPE": (32, 4, (6, 6), 3, {"query_key": lambda: QueryKeyTransform(
        8, (6, 6), qk_norm=True, rope=True, rmsnorm=True)}),
}


# The core's kernels treat these shapes as the others in bf16 (masks, tiles): float32 proves them, and the interpreter's
# bf16 runs, slow, stay for the cases whose dtypes differ (autocast casts, QK-norm's float32, learned tokens).
CORE_FLOAT32_ONLY = {"non-square, pool not dividing, d=12", "no local term", "more tokens than one program walks (289)"}

# Both fast paths measured against the float64 reference: the fused one must be within FLOOR or no further off
# than the torch one times FACTOR (a gradient summed from cancelling terms loses digits on either). In bf16 the
# lambdas' gradients, sums over every token of such terms, are off by 0.1-30 % on both paths, seed by seed.
# The float32 lambdas' floor: 1.2e-4 was seen on one 2-core AMD EPYC (torch 2.14.1) with learned tokens, against
# 2.8e-5 on the torch path; the same sum of cancelling terms, ordered differently by another CPU's kernels.
PRECISIONS = {"float32": (None, 3, 1e-5, 3e-4), "bf16 autocast": (torch.bfloat16, 2, 0.02, 0.5)}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CASES)
def test_fused_equals_reference(case, precision):
    dim, heads, grid, pool, options = CASES[case]
    autocast_dtype, factor, floor, lambda_floor = PRECISIONS[precision]
    options = {key: value() if callable(value) else value for key, value in options.items()}  # a module: a fresh one
    vca = randomised(VisualContrastAttention(dim, heads, grid, layer_index=3, pool_size=pool, **options))
    x = torch.randn(2, grid[0] * grid[1], dim, device=DEVICE, requires_grad=True)
    grad_out = torch.randn(2, grid[0] * grid[1], dim, device=DEVICE)
    exact = copy.deepcopy(vca).double()
    reference = outputs_and_gradients(exact.reference_forward, exact, x.detach().double().requires_grad_(),
                                      grad_out.double())
    errors = {}
    core_case = autocast_dtype is None or case not in CORE_FLOAT32_ONLY
    for kernels in ("triton-core", "triton", "torch") if core_case else ("triton", "torch"):
        vca.kernels = kernels
        with same_attention_arithmetic(autocast_dtype is None):
            errors[kernels] = relative_errors(outputs_and_gradients(vca.forward, vca, x, grad_out, autocast_dtype),
                                              reference)
    assert len(errors["triton"]) == 2 + len(list(vca.parameters()))
    for fused in ("triton-core", "triton") if core_case else ("triton",):
        for name, error in errors[fused].items():
            allowed = max(factor * errors["torch"][name], lambda_floor if "lambda" in name else floor)
            assert error <= allowed, (fused, name, error, errors["torch"][name])


@pytest.mark.parametrize("grid, pool", [((8, 8), (4, 4)), ((6, 10), (4, 3)), ((7, 5), (3, 2)), ((5, 5), (5, 5))])
def test_pooling_bins_are_adaptive_average_pooling(grid, pool):
    tokens = torch.randn(2, grid[0] * grid[1], 6, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(tokens.transpose(1, 2).reshape(2, 6, *grid), pool).flatten(2).transpose(1, 2)
    member, scale, uniform = pooling_bins(grid, pool)
    assert set(member.unique().tolist()) <= {0.0, 1.0}  # exact in bf16
    torch.testing.assert_close(member.double() @ tokens * scale.double(), expected)
    assert uniform == (pytest.approx(scale[0].item()) if (scale == scale[0]).all() else None)
    with torch.device("meta"):
        assert pooling_bins(grid, pool)[2] == uniform


def test_auto_takes_the_fused_kernels_on_cuda_for_power_of_two_head_widths():
    assert auto_takes_triton("cuda", torch.bfloat16, 64) and auto_takes_triton("cuda", torch.float32, 8)
    assert not auto_takes_triton("cuda", torch.bfloat16, 72)  # DiT-XL: measured slower than the torch ops
    assert not auto_takes_triton("cuda", torch.float64, 64) and not auto_takes_triton("cpu", torch.float32, 64)


def test_kernels_option_chooses_the_path():
    vca = VisualContrastAttention(32, 4, (6, 6))
    x = torch.randn(1, 36, 32)
    assert vca.kernels == "auto" and vca._uses_fused_kernels(x) == x.is_cuda
    assert not vca._uses_fused_kernels(x.double())  # the kernels compute in float32: float64 keeps torch ops
    set_vca_kernels(torch.nn.Sequential(vca), "triton")
    assert vca.kernels == "triton" and vca._uses_fused_kernels(x)
    set_vca_kernels(vca, "triton-core")
    assert vca._uses_fused_kernels(x)
    with pytest.raises(ValueError, match="VCA kernels must be one of auto, torch, triton, triton-core, got 'cuda'"):
        set_vca_kernels(vca, "cuda")
    with pytest.raises(ValueError, match="got 10 tokens"):
        vca(torch.randn(1, 10, 32))


def test_a_dit_through_the_fused_path_compiles_and_trains():
    """The custom ops trace through AOTAutograd: compiled = eager, and their gradients reach every parameter (the
    core's op: test_the_core_op_passes_opcheck, and every gradient in test_fused_equals_reference)."""
    model = create_model("DiT-Mini/2-VCA", input_size=8, num_classes=4).to(DEVICE)
    with torch.no_grad():  # adaLN-Zero starts every block and the output at zero; open them so all take part
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.05)
    set_vca_kernels(model, "triton")
    x, t, y = torch.randn(2, 4, 8, 8, device=DEVICE), torch.tensor([3, 700], device=DEVICE), torch.tensor([1, 2])
    eager = model(x, t, y.to(DEVICE))
    compiled = torch.compile(model, backend="aot_eager")(x, t, y.to(DEVICE))
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    compiled.square().mean().backward()
    attention = model.blocks[0].attn
    for name, p in attention.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("local_term", [True, False])
def test_custom_ops_pass_opcheck(local_term):
    """Schema, fake (meta) implementations, autograd registration and AOT dispatch of both epilogues."""
    B, h, n, N, d = 2, 2, 4, 12, 8
    u = torch.randn(B, 2 * n, h, d, device=DEVICE).transpose(1, 2).requires_grad_()  # flash attention's layout
    gain = torch.randn(d, device=DEVICE, requires_grad=True)
    lambdas = [torch.randn(d, device=DEVICE, requires_grad=True) * 0.1 for _ in range(8)]
    torch.library.opcheck(vca_fused.contrast_values, (u, gain, lambdas, 0.5, 0.7, 1e-5))
    o = torch.randn(B, N, h, d, device=DEVICE).transpose(1, 2).requires_grad_()
    v = torch.randn(B, N, 3, h, d, device=DEVICE)[:, :, 2].transpose(1, 2).requires_grad_()  # a view of qkv
    weight = torch.randn(h * d, 1, 3, 3, device=DEVICE, requires_grad=True) if local_term else None
    bias = torch.randn(h * d, device=DEVICE, requires_grad=True) if local_term else None
    torch.library.opcheck(vca_fused.norm_merge_local, (o, v, gain, weight, bias, 3, 4, 0.7, 1e-5))


@pytest.mark.parametrize("joint", [True, False])
def test_the_core_op_passes_opcheck(joint):
    """The one-op core: schema, fake implementation, autograd registration and AOT dispatch."""
    B, h, n, N, d = 2, 2, 3, 10, 8
    q, k, v = (torch.randn(B, N, h, d, device=DEVICE).transpose(1, 2).requires_grad_() for _ in range(3))
    contrast = torch.randn(B, h, 2 * n, d, device=DEVICE, requires_grad=True)
    gain = torch.randn(d, device=DEVICE, requires_grad=True)
    lambdas = [torch.randn(d, device=DEVICE, requires_grad=True) * 0.1 for _ in range(8)]
    torch.library.opcheck(vca_core.core, (q, k, v, contrast, gain, lambdas, 0.5, 0.7, 1e-5, joint))


def test_a_failing_triton_build_says_how_to_go_back(monkeypatch):
    class Broken:  # what Triton raises on a machine without a C compiler for its launcher, say
        def __getattr__(self, name):
            raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    monkeypatch.setattr(vca_fused, "_KERNELS", Broken())
    vca = VisualContrastAttention(32, 4, (6, 6), kernels="triton").to(DEVICE)
    with pytest.raises(RuntimeError, match=r"contrast_values_forward failed \(RuntimeError: Failed to find C "
                                           r"compiler.*\); run with --vca-kernels torch"):
        vca(torch.randn(1, 36, 32, device=DEVICE))
