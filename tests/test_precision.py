"""--precision (fp32, tf32, bf16, auto) of sampling, the VAE's dtype, and the seconds per stage in the log."""
import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny import perturbed

import sample
from common.errors import InvalidValue
from gen import save_pretrained
from gen.family import make_sampler
from gen.sampling import generate_images, guided, resolve_precision, sampling_precision
from gen.vae import DECODE_BATCH_FP32, DECODE_BATCH_HALF, decode, decode_batch, load_vae

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_context_sets_autocast_and_tf32_and_restores_the_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with sampling_precision("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with sampling_precision("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu") and not torch.backends.cuda.matmul.allow_tf32
    with sampling_precision("tf32", "cpu"):
        assert not torch.is_autocast_enabled("cpu") and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved
    with pytest.raises(InvalidValue, match="unknown precision 'fp16'"):
        sampling_precision("fp16", "cpu").__enter__()


def test_auto_is_bf16_on_gpus_and_fp32_on_the_cpu():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"  # a name only: no GPU needed
    assert resolve_precision("tf32", "cpu") == "tf32"


def test_bf16_rounds_only_the_network_and_the_sampler_state_stays_float32():
    model = perturbed("DiT-Mini/2", in_channels=3)
    labels, x = torch.tensor([1, 2, 3]), torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 500)
    outputs = {p: guided(model, labels, cfg_scale=2.0, precision=p)(x, t) for p in ("fp32", "bf16")}
    assert outputs["bf16"].dtype == torch.float32
    relative = ((outputs["bf16"] - outputs["fp32"]).norm() / outputs["fp32"].norm()).item()
    assert 0 < relative < 0.03  # bf16 did run (not equal), and only rounded (close)
    images = generate_images(model, None, labels, x, make_sampler("DiT", "ddim", num_steps=3), 2.0, precision="bf16")
    assert images.dtype == torch.float32 and images.isfinite().all()


def test_a_vae_for_decoding_loads_in_bf16_without_diffusers_cast_warning(tiny_vae):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vae = load_vae(tiny_vae, dtype=torch.bfloat16)
    assert vae.dtype == torch.bfloat16
    exact = load_vae(tiny_vae)
    latents = torch.randn(DECODE_BATCH_FP32 + 3, 4, 8, 8)  # more than one decode chunk
    decoded = decode(exact, latents)
    one_by_one = torch.cat([decode(exact, latents[i : i + 1]) for i in range(len(latents))])
    torch.testing.assert_close(decoded, one_by_one, rtol=1e-5, atol=1e-5)
    rounded = decode(vae, latents)
    assert rounded.dtype == torch.float32 and 0 < (rounded - decoded).abs().max() < 0.1


def test_decode_chunks_are_sized_by_the_vae_dtype(tiny_vae):
    chunk_sizes = []
    for dtype, expected in ((torch.float32, DECODE_BATCH_FP32), (torch.bfloat16, DECODE_BATCH_HALF)):
        vae = load_vae(tiny_vae, dtype=dtype)
        original = vae.decode
        vae.decode = lambda z, original=original: chunk_sizes.append(len(z)) or original(z)
        chunk_sizes.clear()
        decode(vae, torch.randn(DECODE_BATCH_HALF + 1, 4, 8, 8))
        assert decode_batch(dtype) == expected and chunk_sizes[0] == expected
        assert sum(chunk_sizes) == DECODE_BATCH_HALF + 1


@pytest.fixture(scope="module")
def dit_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    return str(save_pretrained(perturbed("DiT-Mini/2", in_channels=3), folder / "dit.safetensors"))


def test_sample_records_the_resolved_precision_and_times_its_stages(tmp_path, dit_export, capsys):
    common = ["--ckpt", dit_export, "--vae", "none", "--sampler", "ddim", "--num-sampling-steps", "2",
              "--num-fid-samples", "6", "--per-proc-batch-size", "4"]
    sample.main([*common, "--sample-dir", str(tmp_path / "auto")])
    log = capsys.readouterr()
    with open(tmp_path / "auto" / "sample_settings.json") as handle:
        assert json.load(handle)["precision"] == "fp32"  # auto, resolved on the CPU
    stages = next(line for line in (log.out + log.err).splitlines() if line.startswith("time per stage"))
    assert "network" in stages and "PNG writing" in stages
    with pytest.raises(Exception, match="other settings"):  # bf16 images are other images: no mixing
        sample.main([*common, "--sample-dir", str(tmp_path / "auto"), "--precision", "bf16"])
    sample.main([*common, "--sample-dir", str(tmp_path / "tf32"), "--tf32"])  # DiT's flag, an alias
    with open(tmp_path / "tf32" / "sample_settings.json") as handle:
        assert json.load(handle)["precision"] == "tf32"
    with np.load(tmp_path / "auto" / "samples.npz") as a, np.load(tmp_path / "tf32" / "samples.npz") as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])  # TF32 is a no-op on the CPU


def test_compile_compiles_the_forward_that_guidance_calls(tmp_path, dit_export, monkeypatch):
    compiled = []

    def recording_compile(function, **options):  # stands in for torch.compile: the wiring, not Inductor
        compiled.append(function)
        return function

    monkeypatch.setattr(torch, "compile", recording_compile)
    common = ["--ckpt", dit_export, "--vae", "none", "--sampler", "ddim", "--num-sampling-steps", "2",
              "--class-labels", "1", "2"]
    sample.main([*common, "--output", str(tmp_path / "plain.png")])
    assert not compiled
    sample.main([*common, "--output", str(tmp_path / "compiled.png"), "--compile"])
    assert len(compiled) == 1 and compiled[0].__name__ == "forward"  # the bound forward forward_with_cfg calls


def test_the_compile_tip_is_given_for_long_gpu_runs_only():
    def pays(device, processes, samples, compiled=False):
        args = SimpleNamespace(num_fid_samples=samples, compile=compiled)
        return sample.compile_would_pay(args, SimpleNamespace(device=torch.device(device), num_processes=processes))

    assert pays("cuda", 1, 50_000) and pays("cuda", 8, 50_000)
    assert not pays("cuda", 1, 50_000, compiled=True) and not pays("cpu", 1, 50_000)
    assert not pays("cuda", 1, 1_000) and not pays("cuda", 32, 50_000)
