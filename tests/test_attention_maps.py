"""python -m gen.study.attention_maps: VCA's stage-I and stage-II maps over a generated sample, captured by hooks."""
import numpy as np
import pytest
import torch
from PIL import Image
from tiny import perturbed

from common.cli import run_command
from common.errors import UserError
from gen import save_pretrained
from gen.family import recorded_process
from gen.settings import DIFFUSION_DEFAULTS, TRANSPORT_DEFAULTS
from gen.study.attention_maps import attention_figure, attention_maps, main, noised_input, vca_blocks

pytestmark = pytest.mark.usefixtures("one_thread")
NUM_CLASSES = 10


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Pixel-space (8x8 RGB) exports: a SiT with VCA, and an MHSA DiT."""
    folder = tmp_path_factory.mktemp("exports")
    sit = perturbed("SiT-Mini/2-VCA", in_channels=3, num_classes=NUM_CLASSES)
    dit = perturbed("DiT-Mini/2", in_channels=3, num_classes=NUM_CLASSES)
    return {
        "VCA": str(save_pretrained(sit, folder / "sit-vca.safetensors", vae="none",
                                   process=dict(TRANSPORT_DEFAULTS))),
        "MHSA": str(save_pretrained(dit, folder / "dit.safetensors", vae="none", process=dict(DIFFUSION_DEFAULTS))),
    }


def test_the_command_writes_a_png_and_nothing_else(tmp_path, exports, capsys):
    out = tmp_path / "maps.png"
    main(["--ckpt", exports["VCA"], "--class-label", "3", "--out", str(out), "--num-sampling-steps", "4",
          "--mode", "SDE", "--cfg-scale", "1.5"])
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 800 and image.size[1] > 500  # 12 panels by 1 + 4 heads
    assert [p.name for p in tmp_path.iterdir()] == ["maps.png"]


def test_stage_one_maps_are_softmaxes_over_the_token_grid_and_hooks_leave_the_model_alone():
    model = perturbed("DiT-Mini/2-VCA", input_size=8, in_channels=3, num_classes=NUM_CLASSES)
    x, t, labels = torch.randn(2, 3, 8, 8), torch.tensor([10, 900]), torch.tensor([1, 2])
    with torch.no_grad():
        plain = model(x, t, labels)
    maps = attention_maps(model, x, t, labels)
    assert sorted(maps) == vca_blocks(model) == [0, 1, 2, 3]
    attention = model.blocks[0].attn
    tokens, contrast = 4 * 4, 2 * attention.num_contrast  # 8x8 pixels in 2x2 patches; T+ and T- streams
    for block in maps.values():
        assert block["stage1"].shape == (2, attention.num_heads, contrast, tokens)
        assert block["stage2"].shape == (2, attention.num_heads, tokens, contrast)
        torch.testing.assert_close(block["stage1"].sum(-1), torch.ones(2, attention.num_heads, contrast))
        # joint stage II: one softmax over [T+; T-] (docs/vca.md, step 5)
        torch.testing.assert_close(block["stage2"].sum(-1), torch.ones(2, attention.num_heads, tokens))
        assert not torch.allclose(block["stage1"][:, :, : contrast // 2], block["stage1"][:, :, contrast // 2 :])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, labels), plain)  # hooks removed; the reference path agreed
    assert all(not block.attn._forward_hooks for block in model.blocks)


def test_the_input_lies_between_noise_and_the_sample():
    sit = perturbed("SiT-Mini/2-VCA", in_channels=3)
    latents, noise = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    process = recorded_process(sit, None)
    torch.testing.assert_close(noised_input(sit, latents, noise, 1.0, process)[0], latents)
    torch.testing.assert_close(noised_input(sit, latents, noise, 0.0, process)[0], noise)
    dit = perturbed("DiT-Mini/2-VCA", in_channels=3)
    x_t, t = noised_input(dit, latents, noise, 0.5, recorded_process(dit, {"diffusion_steps": 1000}))
    assert t.tolist() == [500]
    assert 0.1 < np.corrcoef(x_t.flatten(), latents.flatten())[0, 1] < 0.99


def test_an_mhsa_model_fails_in_one_line_with_status_2(tmp_path, exports, capsys):
    argv = ["--ckpt", exports["MHSA"], "--class-label", "3", "--out", str(tmp_path / "maps.png")]
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "DiT-Mini/2 has no Visual-Contrast Attention" in error
    assert not (tmp_path / "maps.png").exists()
    with pytest.raises(UserError, match="no Visual-Contrast Attention"):
        vca_blocks(perturbed("SiT-Mini/2"))


def test_the_picture_has_a_colour_bar_per_head_and_stage_and_says_conditioned_on():
    heads, contrast, tokens = 2, 8, 16  # a 4x4 token grid pooled to 2x2: 4 contrast tokens per stream
    maps = {1: {"stage1": torch.rand(1, heads, contrast, tokens).softmax(-1),
                "stage2": torch.rand(1, heads, tokens, contrast).softmax(-1)}}
    result = {"image": torch.zeros(3, 8, 8), "noised_image": torch.zeros(3, 8, 8), "maps": maps, "timestep": 0.5,
              "class_label": 3, "step_fraction": 0.5, "grid_size": (4, 4), "pool_size": (2, 2), "model": "tiny"}
    figure = attention_figure(result)
    bars = [axes for axes in figure.axes if axes.get_label() == "<colorbar>"]
    assert len(bars) == 2 * heads
    panels = 2 * 4 + 4
    assert len(figure.axes) == 3 + heads * panels + len(bars)  # sample, input, caption; maps; bars
    titles = [axes.get_title() for axes in figure.axes]
    assert "sample conditioned\non class 3" in titles and not any(title.startswith("sample, class") for title in titles)


def test_the_map_columns_are_evenly_spaced():
    """Every map panel of a head's row has one width, and consecutive panels of a stage one gap (the colour bars
    and the row's label take their own room, not a panel's)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    heads, contrast, tokens = 2, 8, 16
    maps = {1: {"stage1": torch.rand(1, heads, contrast, tokens).softmax(-1),
                "stage2": torch.rand(1, heads, tokens, contrast).softmax(-1)}}
    result = {"image": torch.zeros(3, 8, 8), "noised_image": torch.zeros(3, 8, 8), "maps": maps, "timestep": 0.5,
              "class_label": 3, "step_fraction": 0.5, "grid_size": (4, 4), "pool_size": (2, 2), "model": "tiny"}
    figure = attention_figure(result)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    titled = [axes for axes in figure.axes if axes.get_title().startswith(("I: ", "II: "))]
    boxes = [axes.get_window_extent(canvas.get_renderer()) for axes in titled]
    widths = [box.width for box in boxes]
    assert max(widths) - min(widths) < 1.5, widths
    stage1 = [box for axes, box in zip(titled, boxes, strict=True) if axes.get_title().startswith("I: ")]
    gaps = [right.x0 - left.x1 for left, right in zip(stage1, stage1[1:], strict=False)]
    assert max(gaps) - min(gaps) < 1.5, gaps


def test_the_command_samples_with_the_files_recorded_steps_and_guidance(tmp_path, monkeypatch):
    import gen.study.attention_maps as maps

    recorded = dict(mode="ODE", sampling_method="euler", num_sampling_steps=3, cfg_scale=1.5)
    export = save_pretrained(perturbed("SiT-Mini/2-VCA", in_channels=3, num_classes=NUM_CLASSES),
                             tmp_path / "sit.safetensors", vae="none", process=dict(TRANSPORT_DEFAULTS),
                             sampler=recorded)
    seen = {}
    original_prepare, original_sample = maps.prepare_sampling, maps.sample_attention_maps

    def prepare(*args, **kwargs):
        sampling = original_prepare(*args, **kwargs)
        seen["steps"] = sampling.settings.num_sampling_steps
        return sampling

    def sample(*args, **kwargs):
        seen["cfg_scale"] = kwargs["cfg_scale"]
        return original_sample(*args, **kwargs)

    monkeypatch.setattr(maps, "prepare_sampling", prepare)
    monkeypatch.setattr(maps, "sample_attention_maps", sample)
    main(["--ckpt", str(export), "--class-label", "3", "--out", str(tmp_path / "maps.png")])
    assert seen == {"steps": 3, "cfg_scale": 1.5}  # not DiT's 250 steps at guidance 4 for pictures
