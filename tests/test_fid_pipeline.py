"""The whole pipeline on a few small images: `fid ref` then `fid calc`, with seeded random Inception weights
loaded through the real --inception-weights path (nothing is downloaded).

Inception runs at 299x299 whatever the image size: 1.5-6 images/s on 2 CPU cores, hence few images.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import scipy
import torch
import torch_fidelity
from PIL import Image

import fid.cache
import fid.metrics
import fid.random_weights
import fid.weights
from fid import compute_metrics, load_reference
from fid.cli import main
from fid.features import InceptionFeatures
from fid.pipeline import reference_statistics, sampling_record

NUM_IMAGES = 8
REPORT_KEYS = {"fid_label", "num_samples", "fid", "sfid", "inception_score", "inception_score_std",
               "inception_score_splits", "inception_score_split_rule", "precision", "recall",
               "precision_recall_distances", "kid", "kid_std",
               "class_accuracy", "class_accuracy_per_class", "samples", "reference", "reference_sha256",
               "reference_num_images", "reference_statistics", "feature_network", "feature_extractor",
               "feature_weights", "feature_weights_sha256", "device", "tf32_convolutions", "tf32_matmul", "versions",
               "seconds", "timings", "sampling_precision", "sample_settings"}
STAGES = ["features_samples", "features_reference", "statistics", "fid", "sfid", "inception_score",
          "precision_recall", "kid", "class_accuracy", "total"]


def smooth_image(rng, height, width):
    """A random colour gradient plus a disc: images with structure, unlike the noise used as bad samples."""
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    image = rng.uniform(0, 255, 3) * (1 - xs[..., None]) + rng.uniform(0, 255, 3) * ys[..., None]
    cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 12)
    image[(ys * max(height, width) - cy) ** 2 + (xs * max(height, width) - cx) ** 2 < radius ** 2] = 255
    return np.clip(image, 0, 255).astype(np.uint8)


def sha256(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


@pytest.fixture(scope="module")
def fast_sqrtm():
    """The 2048x2048 Schur square root takes 20 s to minutes on 2 shared cores. With a few images both
    covariances have rank < 64, so S1 S2 lives in a 64-dim subspace: scipy's sqrtm there gives the same
    trace, the only part of it FID uses. scipy's sqrtm on full matrices is tested against ADM in test_fid.py.
    """
    real_sqrtm = fid.metrics.linalg.sqrtm

    def low_rank_sqrtm(matrix, rank=64):
        probe = matrix @ np.random.default_rng(0).standard_normal((len(matrix), rank))
        basis = np.linalg.qr(probe)[0]
        return basis @ real_sqrtm(basis.T @ matrix @ basis) @ basis.T

    features = np.random.default_rng(1).standard_normal((2, 30, 300))
    (_, sigma1), (_, sigma2) = (fid.metrics.feature_statistics(f) for f in features)
    assert np.trace(low_rank_sqrtm(sigma1 @ sigma2)).real == pytest.approx(
        np.trace(real_sqrtm(sigma1 @ sigma2)).real, rel=1e-6)
    patch = pytest.MonkeyPatch()
    patch.setattr(fid.metrics.linalg, "sqrtm", low_rank_sqrtm)
    yield
    patch.undo()


@pytest.fixture(scope="module", autouse=True)
def feature_cache(tmp_path_factory):
    """The reference features' cache goes to a temporary folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        cache_dir = tmp_path_factory.mktemp("cache")
        patch.setenv(fid.cache.CACHE_ENV, str(cache_dir))
        yield cache_dir


def common_flags(weights):
    return ["--inception-weights", weights, "--num-workers", "0", "--batch-size", "10", "--no-progress"]


def count_passes(monkeypatch):
    """The `desc` of every Inception pass over a set of images, in order."""
    passes, real_call = [], InceptionFeatures.__call__

    def counting_call(self, source, *args, desc="features", **kwargs):
        passes.append(desc)
        return real_call(self, source, *args, desc=desc, **kwargs)

    monkeypatch.setattr(InceptionFeatures, "__call__", counting_call)
    return passes


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, fast_sqrtm):
    """`fid ref` on an ImageNet-layout folder, then `fid calc` on the same images as samples.npz."""
    root = tmp_path_factory.mktemp("fid")
    rng = np.random.default_rng(0)
    for index in range(NUM_IMAGES):
        folder = root / "train" / f"n0{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, 40, 48)).save(folder / f"{index:03d}.png")
    weights = fid.random_weights.save_random_inception_weights(str(root / "inception-random.pth"), seed=0)
    common = common_flags(weights)
    assert main(["ref", str(root / "train"), "--out", str(root / "ref.npz"), "--image-size", "32",
                 *common]) == 0
    with np.load(root / "ref.npz") as reference:
        np.savez(root / "samples.npz", arr_0=reference["arr_0"])
    assert main(["calc", str(root / "samples.npz"), "--ref", str(root / "ref.npz"), *common]) == 0
    with open(root / "report.json") as file:
        return root, weights, json.load(file)


def test_fid_ref_writes_adm_layout(pipeline):
    root, _, _ = pipeline
    with np.load(root / "ref.npz") as reference:
        shapes = {key: (reference[key].shape, reference[key].dtype) for key in reference.files}
    assert shapes == {"arr_0": ((NUM_IMAGES, 32, 32, 3), np.uint8), "mu": ((2048,), np.float64),
                      "sigma": ((2048, 2048), np.float64), "mu_s": ((2023,), np.float64),
                      "sigma_s": ((2023, 2023), np.float64)}


def test_fid_calc_reports_every_metric_and_its_provenance(pipeline):
    root, weights, report = pipeline
    assert set(report) == REPORT_KEYS
    assert report["num_samples"] == NUM_IMAGES and report["fid_label"] == f"FID (N={NUM_IMAGES})"
    assert report["reference_sha256"] == sha256(root / "ref.npz")
    assert report["feature_weights_sha256"] == sha256(weights) and report["feature_network"] == "inception"
    assert report["feature_weights"] == os.path.abspath(weights) and report["device"] == "cpu"
    assert report["class_accuracy"] is None  # Inception's classes are not the samples' labels
    assert report["seconds"] > 0 and "inception-v3-compat" in report["feature_extractor"]
    assert report["versions"] == {"torch": torch.__version__, "torch-fidelity": torch_fidelity.__version__,
                                  "scipy": scipy.__version__, "numpy": np.__version__}
    assert report["tf32_convolutions"] is False and report["tf32_matmul"] is False  # CPU: no TF32
    assert report["inception_score_split_rule"].startswith("contiguous chunks of 5000 samples")
    assert report["precision_recall_distances"].startswith("float16 distance blocks")
    assert report["reference_statistics"] == "mu/sigma in the file"
    with open(root / "report.md") as file:
        assert file.read().startswith(f"# FID (N={NUM_IMAGES}): ")
    assert not [name for name in os.listdir(root) if ".tmp" in name]


def test_fid_calc_reports_the_time_of_every_stage(pipeline):
    root, _, report = pipeline
    timings = report["timings"]
    assert list(timings) == STAGES and timings["class_accuracy"] is None  # Inception: no class accuracy
    # The first calc runs the network on the reference images (the next ones read the cache).
    seconds = {stage: value for stage, value in timings.items() if stage != "class_accuracy"}
    assert all(isinstance(value, float) and value >= 0 for value in seconds.values()), seconds
    assert timings["features_samples"] > 0 and timings["features_reference"] > 0
    assert timings["features_samples"] + timings["features_reference"] + timings["statistics"] <= timings["total"]
    assert report["seconds"] == round(timings["total"], 2)
    with open(root / "report.md") as file:
        markdown = file.read()
    assert "| stage | seconds |" in markdown and f"| total | {timings['total']:.2f} |" in markdown


def test_a_set_against_its_own_reference_scores_as_identical(pipeline):
    root, _, report = pipeline
    reference = load_reference(root / "ref.npz")
    assert abs(report["fid"]) < 1e-4 * np.trace(reference.sigma)
    assert abs(report["sfid"]) < 1e-4 * np.trace(reference.sigma_s)
    assert report["precision"] == 1.0 and report["recall"] == 1.0
    assert np.isfinite(report["inception_score"]) and report["inception_score"] >= 1.0
    # Unbiased KID of a set with itself is slightly negative (the diagonal is left out of one term only).
    assert -0.05 < report["kid"] < 0.01


def test_noise_samples_score_worse_through_the_python_api(pipeline):
    root, weights, report = pipeline
    noise = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    extractor = InceptionFeatures(weights, device="cpu")
    scores = compute_metrics(noise, root / "ref.npz", extractor=extractor, num_workers=0, progress=False,
                             kid=False)
    assert scores["fid"] > 1e-3 * np.trace(load_reference(root / "ref.npz").sigma)
    assert scores["fid"] > 100 * abs(report["fid"]) and scores["sfid"] > 100 * abs(report["sfid"])
    # Noise images cluster tightly: no reference image falls inside their manifold.
    assert scores["recall"] < 0.5 and scores["kid"] is None and scores["samples"] == "<array>"
    assert scores["fid_label"] == "FID (N=6)"


def test_spatial_features_are_mixed_6d_first_7_channels_channels_last(pipeline):
    _, weights, _ = pipeline
    extractor = InceptionFeatures(weights, device="cpu")
    outputs = []
    extractor.network.Mixed_6d.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    image = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    _, _, spatial = extractor.batch(image)
    # TF's mixed_6/conv is the 1x1 branch: the first channels of Mixed_6d's output, flattened as [17, 17, 7].
    expected = outputs[0][0, :7].permute(1, 2, 0).reshape(-1)
    assert spatial.shape == (1, 2023) and np.array_equal(spatial[0].numpy(), expected.numpy())


def test_a_second_calc_against_the_same_reference_runs_one_inception_pass(pipeline, monkeypatch, capsys):
    root, weights, report = pipeline
    passes = count_passes(monkeypatch)
    capsys.readouterr()
    assert main(["calc", str(root / "samples.npz"), "--ref", str(root / "ref.npz"), "--out-dir",
                 str(root / "second"), *common_flags(weights)]) == 0
    assert passes == ["samples"]  # the reference images' features come from the cache the first calc wrote
    with open(root / "second" / "report.json") as file:
        second = json.load(file)
    for key in ("fid", "sfid", "inception_score", "precision", "recall", "kid"):
        assert second[key] == report[key]
    assert second["timings"]["features_reference"] == "cached"
    last_line = capsys.readouterr().out.splitlines()[-1]
    assert last_line.startswith("time per stage (s): features: samples ")
    assert "features: reference cached" in last_line and last_line.endswith(f"total {second['timings']['total']:.2f}")


def test_a_corrupt_cache_is_recomputed_with_one_warning_line(pipeline, feature_cache, monkeypatch, capsys):
    root, weights, report = pipeline
    for name in os.listdir(feature_cache):
        (feature_cache / name).write_bytes(b"truncated")
    capsys.readouterr()
    passes = count_passes(monkeypatch)
    assert main(["calc", str(root / "samples.npz"), "--ref", str(root / "ref.npz"), "--out-dir",
                 str(root / "third"), *common_flags(weights)]) == 0
    assert passes == ["samples", "reference images"]
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("fid: warning: ignoring the corrupt feature cache")
    with open(root / "third" / "report.json") as file:
        assert json.load(file)["precision"] == report["precision"]


def test_a_reference_with_only_arr_0_gets_statistics_from_its_images(pipeline, monkeypatch):
    root, weights, report = pipeline
    with np.load(root / "ref.npz") as reference:
        np.savez(root / "images_ref.npz", arr_0=reference["arr_0"])
    extractor = InceptionFeatures(weights, device="cpu")
    passes = count_passes(monkeypatch)
    reference = load_reference(root / "images_ref.npz")
    scores = compute_metrics(root / "samples.npz", reference, extractor=extractor, num_workers=0, progress=False)
    assert passes == ["samples", "reference images"] and scores["reference_statistics"] == "arr_0 (8 images)"
    # `fid ref` computed the same images' statistics in another batch layout: equal up to float round-off.
    full = load_reference(root / "ref.npz")
    computed = reference_statistics(reference, reference.image_features[extractor.weights_sha256])
    for mine, written in zip(computed, (full.mu, full.sigma, full.mu_s, full.sigma_s), strict=True):
        np.testing.assert_allclose(mine, written, rtol=1e-4, atol=1e-6 * np.abs(written).max())
    assert scores["precision"] == report["precision"] and scores["sfid"] is not None


def test_the_report_says_which_precision_the_samples_were_made_in(pipeline, tmp_path):
    root, _, report = pipeline
    assert report["sampling_precision"] is None and report["sample_settings"] is None  # no sample.py record
    with open(root / "report.md") as file:
        assert "unknown (no sample_settings.json beside the samples)" in file.read()
    (tmp_path / "sample_settings.json").write_text(json.dumps({"precision": "bf16", "sampler": "ddim"}))
    assert sampling_record(tmp_path / "samples.npz") == {
        "sampling_precision": "bf16", "sample_settings": {"precision": "bf16", "sampler": "ddim"}}
    assert sampling_record(np.zeros((2, 8, 8, 3), np.uint8))["sampling_precision"] is None  # an array: no folder
