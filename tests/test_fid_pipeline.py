"""The whole pipeline on a few small images: `fid ref` then `fid calc`, with seeded random Inception weights
loaded through the real --inception-weights path (nothing is downloaded).

Inception runs at 299x299 whatever the image size: 1.5-6 images/s on 2 CPU cores, hence few images.
"""

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

import fid.metrics
import fid.weights
from fid import compute_metrics, load_reference
from fid.cli import main
from fid.features import InceptionFeatures

NUM_IMAGES = 8
REPORT_KEYS = {"fid_label", "num_samples", "fid", "sfid", "inception_score", "inception_score_std",
               "precision", "recall", "kid", "kid_std", "samples", "reference", "reference_sha256",
               "reference_num_images", "feature_extractor", "inception_weights", "inception_weights_sha256",
               "device", "seconds"}


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


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, fast_sqrtm):
    """`fid ref` on an ImageNet-layout folder, then `fid calc` on the same images as samples.npz."""
    root = tmp_path_factory.mktemp("fid")
    rng = np.random.default_rng(0)
    for index in range(NUM_IMAGES):
        folder = root / "train" / f"n0{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, 40, 48)).save(folder / f"{index:03d}.png")
    weights = fid.weights.save_random_inception_weights(str(root / "inception-random.pth"), seed=0)
    common = ["--inception-weights", weights, "--num-workers", "0", "--batch-size", "10", "--no-progress"]
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
    assert report["inception_weights_sha256"] == sha256(weights)
    assert report["inception_weights"] == os.path.abspath(weights) and report["device"] == "cpu"
    assert report["seconds"] > 0 and "inception-v3-compat" in report["feature_extractor"]
    with open(root / "report.md") as file:
        assert file.read().startswith(f"# FID (N={NUM_IMAGES}): ")
    assert not [name for name in os.listdir(root) if ".tmp" in name]


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
