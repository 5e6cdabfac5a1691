"""LightningDiT's blocks (RMSNorm, SwiGLU, QK-norm, 2-D RoPE) as options of our network: a tiny LightningDiT's
weights give LightningDiT's own outputs (tests/fixtures/recipe_anchors.safetensors), with MHSA; with VCA, every
path (reference, torch, fused) agrees and the options reach both stages."""
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tolerances import ARITHMETIC, NETWORK, assert_close_to_recorded

from gen.models import create_model, set_vca_kernels
from gen.models.config import ModelConfig
from gen.models.lightning import rope_tables, rotate_pairs
from gen.models.zoo import build_model

ANCHORS = os.path.join(os.path.dirname(__file__), "fixtures", "recipe_anchors.safetensors")
OPTIONS = dict(qk_norm=True, rope=True, swiglu=True, rmsnorm=True)


@pytest.fixture(scope="module")
def anchors():
    with safe_open(ANCHORS, framework="pt") as handle:
        return load_file(ANCHORS), handle.metadata()


def test_a_tiny_lightningdit_computes_what_lightningdit_computes(anchors):
    records, metadata = anchors
    theirs = json.loads(metadata["lightning.config"])
    config = ModelConfig(family="SiT", input_size=theirs["input_size"], patch_size=theirs["patch_size"],
                         in_channels=theirs["in_channels"], hidden_size=theirs["hidden_size"], depth=theirs["depth"],
                         num_heads=theirs["num_heads"], num_classes=theirs["num_classes"], learn_sigma=False,
                         **OPTIONS)
    model = build_model(config).eval()
    prefix = "lightning.state_dict."
    state = {key[len(prefix):].replace("attn.q_norm", "attn.query_key.q_norm")
             .replace("attn.k_norm", "attn.query_key.k_norm"): value
             for key, value in records.items() if key.startswith(prefix)}
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = model(records["lightning.x"], records["lightning.t"], records["lightning.y"])
    assert_close_to_recorded(out, records["lightning.out"], NETWORK, "LightningDiT forward")


def test_rope_rotates_as_lightningdit_does(anchors):
    records, _ = anchors
    head_dim, side = records["rope.in"].shape[-1], 4  # VisionRotaryEmbeddingFast(dim=8, pt_seq_len=4): d = 16
    cos, sin = rope_tables(head_dim, (side, side))
    rotated = records["rope.in"] * cos + rotate_pairs(records["rope.in"]) * sin
    assert_close_to_recorded(rotated, records["rope.out"], ARITHMETIC, "RoPE")


def test_rope_makes_attention_scores_depend_on_offsets_only():
    """The point of RoPE: <R(p) q, R(p') k> depends on p - p' alone."""
    cos, sin = rope_tables(8, (4, 4))
    q, k = torch.randn(8), torch.randn(8)

    def score(p, r):
        rq = q * cos[p] + rotate_pairs(q) * sin[p]
        rk = k * cos[r] + rotate_pairs(k) * sin[r]
        return float(rq @ rk)

    assert score(0, 5) == pytest.approx(score(5, 10), abs=1e-5)  # both (0,0)->(1,1) on the 4x4 grid, shifted
    assert score(0, 5) != pytest.approx(score(0, 6), abs=1e-3)


@pytest.mark.parametrize("options", [dict(qk_norm=True), dict(rope=True), OPTIONS], ids=["qk_norm", "rope", "all"])
def test_vca_paths_agree_with_the_options(options):
    torch.manual_seed(0)
    model = create_model("SiT-Mini/2-VCA", input_size=16, in_channels=3, num_classes=3, **options)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 2])
    attention = model.blocks[0].attn
    tokens = torch.randn(2, 64, 128)
    reference = attention.reference_forward(tokens)
    fast = attention(tokens)
    assert_close_to_recorded(fast, reference, NETWORK, "VCA torch path with " + ", ".join(options))
    baseline = create_model("SiT-Mini/2-VCA", input_size=16, in_channels=3, num_classes=3)
    baseline.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(set_vca_kernels(model, "torch")(x, t, y), baseline(x, t, y), atol=1e-4)


def test_options_are_in_the_config_and_off_by_default():
    plain = create_model("DiT-S/2")
    assert plain.config.lightning_blocks() == [] and not any("query_key" in key for key in plain.state_dict())
    model = create_model("DiT-Mini/2", input_size=8, **OPTIONS)
    assert model.config.lightning_blocks() == ["qk_norm", "rope", "swiglu", "rmsnorm"]
    assert type(model.blocks[0].mlp).__name__ == "SwiGLU" and type(model.final_layer.norm_final).__name__ == "RMSNorm"
    with pytest.raises(ValueError, match="head width divisible by 4"):
        ModelConfig.from_dict(dict(ModelConfig(hidden_size=66, num_heads=3).to_dict(), rope=True))
