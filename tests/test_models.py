"""The DiT/SiT backbone agrees with the official networks; the zoo builds; official checkpoints load."""
import pytest
import torch
from official import official_state_dict, official_tensors, tiny_official_model
from tolerances import NETWORK, assert_close_to_recorded

from gen.models import DiT, SiT, create_model, list_models, load_official_state_dict, model_config


@pytest.mark.parametrize("family", ["dit", "sit"])
def test_forward_matches_official(family):
    model, data = tiny_official_model(family), official_tensors()
    with torch.no_grad():
        out = model(data[f"{family}.in.x"], data[f"{family}.in.t"], data[f"{family}.in.y"])
        guided = model.forward_with_cfg(
            data[f"{family}.in.x_cfg"], data[f"{family}.in.t_cfg"], data[f"{family}.in.y_cfg"], 4.0)
    assert out.shape == data[f"{family}.out.forward"].shape
    assert_close_to_recorded(out, data[f"{family}.out.forward"], NETWORK, "forward")
    assert_close_to_recorded(guided, data[f"{family}.out.forward_with_cfg_4.0"], NETWORK, "forward_with_cfg")


def test_cfg_on_all_channels_differs_from_official_three():
    model, data = tiny_official_model("dit"), official_tensors()
    model.cfg_channels = None
    with torch.no_grad():
        guided = model.forward_with_cfg(data["dit.in.x_cfg"], data["dit.in.t_cfg"], data["dit.in.y_cfg"], 4.0)
    official = data["dit.out.forward_with_cfg_4.0"]
    assert torch.allclose(guided[:, :3], official[:, :3], atol=1e-6)
    assert not torch.allclose(guided[:, 3:4], official[:, 3:4], atol=1e-3)


def test_cfg_scale_one_is_the_conditional_prediction():
    model, data = tiny_official_model("sit"), official_tensors()
    x, t, y = data["sit.in.x_cfg"], data["sit.in.t_cfg"], data["sit.in.y_cfg"]
    with torch.no_grad():
        guided = model.forward_with_cfg(x, t, y, 1.0)
        conditional = model(x, t, y)
    half = len(x) // 2
    torch.testing.assert_close(guided[:half], conditional[:half], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["DiT-XL/2", "SiT-XL/2"])
def test_official_checkpoint_layout_loads(name, fixtures_json, tmp_path):
    shapes = fixtures_json["official_checkpoint_shapes"][name]
    zeros = {key: torch.zeros(shape) for key, shape in shapes.items()}
    with torch.device("meta"):
        model = create_model(name)
    model = model.to_empty(device="cpu")
    load_official_state_dict(model, {"ema": zeros})  # training checkpoints nest the weights under "ema"
    assert all(float(p.detach().abs().sum()) == 0 for p in model.parameters())


def test_official_pt_file_loads_with_weights_only(tmp_path):
    path = tmp_path / "DiT-tiny.pt"
    torch.save({"model": official_state_dict("dit")}, path)
    model = create_model("DiT-S/2", input_size=8, hidden_size=64, depth=2, num_heads=4, num_classes=10)
    load_official_state_dict(model, path)
    assert torch.equal(model.pos_embed, official_state_dict("dit")["pos_embed"])


def test_parameter_counts_match_official(fixtures_json):
    with torch.device("meta"):
        for name, expected in fixtures_json["official_param_count"].items():
            model = create_model(name)
            assert sum(p.numel() for p in model.parameters()) == expected, name


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("DiT-XL/2", dict(input_size=64), "pos_embed [1, 256, 1152] in the checkpoint vs [1, 1024, 1152]"),
        ("DiT-XL/2-VCA", {}, "attention kind"),
        ("DiT-L/2", {}, "shape"),
    ],
)
def test_wrong_checkpoint_names_the_difference(name, overrides, message, fixtures_json):
    shapes = fixtures_json["official_checkpoint_shapes"]["DiT-XL/2"]
    with torch.device("meta"):
        model = create_model(name, **overrides)
        state = {key: torch.zeros(shape) for key, shape in shapes.items()}
    with pytest.raises(ValueError, match="checkpoint does not fit") as error:
        load_official_state_dict(model, state)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_every_zoo_name_builds():
    names = list_models()
    assert len(names) == 2 * 5 * 3 * 2
    with torch.device("meta"):
        for name in names:
            model = create_model(name)
            kind = type(model.blocks[0].attn).__name__
            assert kind == ("VisualContrastAttention" if name.endswith("-VCA") else "Attention"), name


def test_unknown_name_and_option_fail_clearly():
    with pytest.raises(ValueError, match="unknown model 'DiT-XXL/2'"):
        create_model("DiT-XXL/2")
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['hiden_size'\]"):
        create_model("DiT-S/2", hiden_size=10)


def test_overrides_apply():
    model = create_model("SiT-Mini/4-VCA", input_size=16, num_classes=7, learn_sigma=False, in_channels=3,
                         vca_pool_size=2, vca_stage2_softmax="separate")
    assert model.config.attention == "vca" and model.config.patch_size == 4
    assert model.y_embedder.embedding_table.num_embeddings == 8
    assert model.blocks[0].attn.pool_size == (2, 2) and model.blocks[0].attn.stage2_softmax == "separate"
    x = torch.randn(2, 3, 16, 16)
    assert model(x, torch.rand(2), torch.tensor([0, 6])).shape == (2, 3, 16, 16)


def test_adaln_zero_initialisation_makes_the_output_zero():
    model = create_model("DiT-Mini/2-VCA", input_size=8, num_classes=10)
    out = model(torch.randn(2, 4, 8, 8), torch.tensor([1, 500]), torch.tensor([1, 2]))
    assert out.shape == (2, 8, 8, 8) and float(out.abs().max()) == 0.0


def _train_a_little(model, steps=2):
    """A few AdamW steps towards a random target, so that no adaLN-Zero weight is still zero."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    target = torch.randn(2, model.out_channels, 8, 8)
    for _ in range(steps):
        out = model(torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2]))
        loss = (out - target[:, : out.shape[1]]).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(1)
    model = _train_a_little(create_model("DiT-Mini/2-VCA", input_size=8, num_classes=10)).train()
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.enable_gradient_checkpointing(enabled)
        torch.manual_seed(2)  # the same class-dropout draw
        model(x, t, y).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert sum(float(g.abs().sum()) for g in grads[0]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["DiT-Mini/2", "DiT-Mini/2-VCA"])
def test_bf16_autocast_and_compile(name):
    model = _train_a_little(create_model(name, input_size=8, num_classes=10)).eval()
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    with torch.no_grad():
        reference = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t, y)
        # aot_eager traces through AOTAutograd (functionalisation, decompositions, VCA's autograd function) as
        # inductor does, without inductor's C++ build, which takes minutes on 2 cores
        compiled = torch.compile(model, backend="aot_eager")(x, t, y)
    assert torch.isfinite(low).all()
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max()
    torch.testing.assert_close(compiled, reference)


def test_networks_take_a_model_config_or_its_fields():
    config = model_config("SiT-Mini/2-VCA", input_size=8, num_classes=5)
    torch.manual_seed(0)
    from_config = SiT(config)
    torch.manual_seed(0)
    from_fields = SiT(**{k: v for k, v in config.to_dict().items() if k != "family"})
    assert from_config.config == from_fields.config == config
    for (name, a), (_, b) in zip(from_config.state_dict().items(), from_fields.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    config.depth = 1  # the models keep their own copy
    assert from_config.config.depth == len(from_config.blocks) == 4
    with pytest.raises(TypeError, match="not both"):
        SiT(config, depth=2)
    with pytest.raises(ValueError, match="cannot build a DiT"):
        DiT(config)
