"""FID pipeline pieces that need no Inception network: metrics, inputs, references, weights, report."""

import json
import os
import re
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file
from tolerances import FRECHET

import fid
import fid.metrics
import fid.networks
import fid.pipeline
import fid.weights
from fid.cli import main
from fid.errors import FIDError
from fid.images import FolderImages, NpzImages, center_crop_arr, open_images
from fid.manifold import DISTANCE_PRECISIONS, distance_block, precision_recall, squared_distances
from fid.metrics import IS_SPLIT_RULES, feature_statistics, frechet_distance, inception_score, kernel_inception_distance
from fid.pipeline import fid_label, reference_image_features
from fid.reference import load_reference
from fid.report import TIMING_ROWS, format_markdown, format_table, format_timings_line, write_report

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


# Frechet distance -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["small", "wide", "rankdef"])
def test_frechet_distance_matches_adm_evaluator_fixtures(name):
    features = load_file(os.path.join(FIXTURES, "frechet.safetensors"))
    with open(os.path.join(FIXTURES, "frechet.json")) as file:
        expected = json.load(file)["frechet_distance"][name]
    stats1 = feature_statistics(features[f"{name}.features1"])
    stats2 = feature_statistics(features[f"{name}.features2"])
    assert fid.frechet_distance(*stats1, *stats2) == pytest.approx(expected, rel=FRECHET)


def test_frechet_distance_of_statistics_with_themselves_is_zero():
    mu, sigma = feature_statistics(np.random.default_rng(0).standard_normal((500, 16)))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_mean_shift():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12))
    shift = rng.standard_normal(12)
    # Shifting every feature moves the mean and keeps the covariance: FID = ||shift||^2 exactly.
    distance = frechet_distance(*feature_statistics(features), *feature_statistics(features + shift))
    assert distance == pytest.approx(shift @ shift, rel=1e-8)
    assert isinstance(distance, float)


def test_frechet_distance_falls_back_to_an_eps_offset_when_the_square_root_is_not_finite(monkeypatch):
    rng = np.random.default_rng(2)
    mu1, sigma1 = feature_statistics(rng.standard_normal((50, 6)))
    mu2, sigma2 = feature_statistics(rng.standard_normal((50, 6)) + 1)
    real_sqrtm, calls = fid.metrics.linalg.sqrtm, []

    def sqrtm_failing_once(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(fid.metrics.linalg, "sqrtm", sqrtm_failing_once)
    with pytest.warns(UserWarning, match="adding 1e-06"):
        distance = frechet_distance(mu1, sigma1, mu2, sigma2)
    offset = np.eye(6) * 1e-6
    np.testing.assert_allclose(calls[1], (sigma1 + offset) @ (sigma2 + offset))
    expected = (mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) \
        - 2 * np.trace(real_sqrtm((sigma1 + offset) @ (sigma2 + offset)).real)
    assert distance == pytest.approx(expected, rel=1e-12)


def test_fid_and_sfid_in_two_threads_equal_them_one_after_the_other(monkeypatch):
    rng = np.random.default_rng(3)
    pool, ref_pool, spatial, ref_spatial = (feature_statistics(rng.standard_normal((60, dim)) + shift)
                                            for dim, shift in ((24, 0), (24, 1), (20, 0), (20, 0.5)))
    alone = frechet_distance(*pool, *ref_pool), frechet_distance(*spatial, *ref_spatial)
    timings = {}
    assert fid.pipeline.frechet_distances(pool, ref_pool, None, (None, None), timings) == (alone[0], None)
    assert timings["fid"] >= 0 and timings["sfid"] is None
    threads, real_distance, both_started = set(), fid.pipeline.frechet_distance, threading.Barrier(2, timeout=10)

    def recording_distance(*statistics):
        threads.add(threading.current_thread().name)
        both_started.wait()  # raises BrokenBarrierError unless FID and sFID run at the same time
        return real_distance(*statistics)

    monkeypatch.setattr(fid.pipeline, "frechet_distance", recording_distance)
    monkeypatch.setattr(fid.pipeline, "CONCURRENT_SQRTM_CORES", 1)  # threads even on a 2-core machine
    timings = {}
    assert fid.pipeline.frechet_distances(pool, ref_pool, spatial, ref_spatial, timings) == alone  # bit for bit
    assert len(threads) == 2 and threading.current_thread().name not in threads
    assert timings["fid"] >= 0 and timings["sfid"] >= 0


# Inception Score, KID, precision/recall --------------------------------------------------------------------

def test_inception_score_of_uniform_logits_is_one():
    mean, std = inception_score(np.zeros((100, 1008)))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_distinct_classes_is_the_number_of_classes():
    # Each of the 10 splits holds 10 samples, each confidently of its own class: exp(log 10) = 10.
    logits = np.full((100, 1008), -1e4)
    logits[np.arange(100), np.arange(100) % 10] = 0.0
    mean, std = inception_score(logits, split_rule="10-equal")
    assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # ADM's rule: one chunk of all 100 samples of 10 classes scores 10 too.
    assert inception_score(logits) == pytest.approx((10.0, 0.0), abs=1e-9)


def test_inception_score_adm_rule_cuts_chunks_of_5000_the_last_one_shorter():
    # 5000 samples spread over 50 classes, then 1000 over 4: chunk scores 50 and 4, so the mean is 27.
    classes = np.concatenate([np.arange(5000) % 50, np.arange(1000) % 4])
    logits = np.full((6000, 100), -1e4)
    logits[np.arange(6000), classes] = 0.0
    assert inception_score(logits) == pytest.approx((27.0, 23.0), rel=1e-9)
    with pytest.raises(ValueError, match="unknown Inception Score split rule 'five'"):
        inception_score(logits, split_rule="five")


def test_kid_is_the_unbiased_cubic_kernel_mmd():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((60, 32)), rng.standard_normal((60, 32)) + 0.3
    k_xx, k_yy, k_xy = ((a @ b.T / 32 + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off_diagonal = ~np.eye(60, dtype=bool)
    expected = k_xx[off_diagonal].mean() + k_yy[off_diagonal].mean() - 2 * k_xy.mean()
    # One subset as large as the sets is a permutation of them: the full-set estimate.
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=60)
    assert mean == pytest.approx(expected, rel=1e-10) and std == 0
    same, _ = kernel_inception_distance(x, rng.standard_normal((60, 32)), subsets=20, subset_size=50)
    assert abs(same) < expected / 5


def test_kid_from_torch_fidelity_equals_the_written_out_estimator():
    """torch-fidelity computes KID; over the same subsets (its draws: RandomState(seed)) it equals the estimator
    written out here, which this module computed by hand before."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((80, 16)), rng.standard_normal((70, 16)) * 1.1 + 0.2
    draws, mmds = np.random.RandomState(7), []
    for _ in range(5):
        a, b = x[draws.choice(80, 40, replace=False)], y[draws.choice(70, 40, replace=False)]
        k_xx, k_yy, k_xy = ((p @ q.T / 16 + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))
        within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (40 * 39)
        mmds.append(within - 2 * k_xy.mean())
    mean, std = kernel_inception_distance(x, y, subsets=5, subset_size=40, seed=7)
    assert (mean, std) == pytest.approx((np.mean(mmds), np.std(mmds)), rel=1e-12, abs=1e-15)
    assert kernel_inception_distance(x[:1], y) == (pytest.approx(float("nan"), nan_ok=True),) * 2


def test_precision_recall_follows_adm_manifold_semantics():
    # k=1: each reference radius reaches its nearest other point; a sample counts if inside any ball (<=).
    ref = np.array([[0.0], [1.0], [2.0], [3.0]])
    samples = np.array([[0.5], [10.0]])
    assert precision_recall(ref, samples, k=1) == (0.5, 1.0)
    assert precision_recall(ref, ref + 100, k=1) == (0.0, 0.0)
    features = np.random.default_rng(4).standard_normal((40, 8))
    assert precision_recall(features, features.copy(), k=3) == (1.0, 1.0)


# ADM's evaluator on the same arrays (tests/fixtures/adm_evaluator.*) -----------------------------------

@pytest.fixture(scope="module")
def adm():
    """Arrays stored as float16 (every value exact), read as float32, and what ADM's evaluator.py computed."""
    with np.load(os.path.join(FIXTURES, "adm_evaluator.npz")) as arrays:
        features = {key: arrays[key].astype(np.float32) for key in arrays.files}
    with open(os.path.join(FIXTURES, "adm_evaluator.json")) as file:
        return features, json.load(file)


def test_fid_and_sfid_match_adm_evaluator(adm, monkeypatch):
    features, expected = adm
    # Measured: sFID 3e-9 relative; FID 4e-10 relative through the full 2048x2048 sqrtm (26 s on 2 cores).
    sample_stats, ref_stats = (feature_statistics(features[f"{name}_spatial"]) for name in ("sample", "ref"))
    assert frechet_distance(*sample_stats, *ref_stats) == pytest.approx(expected["sFID"], rel=1e-5)
    # Speed only: S_samples S_ref maps into the span Q of the 1000 reference features, so the square root of
    # Q^T (S S) Q has the same nonzero eigenvalues, hence the same trace: scipy's sqrtm on 1000 dims, not 2048.
    basis = np.linalg.qr((features["ref_pool"] - features["ref_pool"].mean(0)).T.astype(np.float64))[0]
    real_sqrtm = fid.metrics.linalg.sqrtm
    monkeypatch.setattr(fid.metrics.linalg, "sqrtm", lambda m: basis @ real_sqrtm(basis.T @ m @ basis) @ basis.T)
    sample_stats, ref_stats = (feature_statistics(features[f"{name}_pool"]) for name in ("sample", "ref"))
    assert frechet_distance(*sample_stats, *ref_stats) == pytest.approx(expected["FID"], rel=1e-5)


def test_inception_score_matches_adm_evaluator_with_its_split_rule(adm):
    features, expected = adm
    # Measured: 3e-8 relative (ADM's softmax and logs run in float32, ours in float64).
    assert inception_score(features["sample_logits"])[0] == pytest.approx(expected["IS"], rel=1e-4)
    # At N = 6000 ten equal splits give another number (6.99997): the rule is what the test pins down.
    assert inception_score(features["sample_logits"], "10-equal")[0] != pytest.approx(expected["IS"], rel=1e-4)


def test_precision_recall_match_adm_evaluator_float16_first(adm):
    features, expected = adm
    ref, samples = features["ref_pool"], features["sample_pool"]
    # ADM took the float16 path in every block; so do we (any overflow would make a block non-finite).
    assert torch.isfinite(squared_distances(*(torch.tensor(x).half() for x in (ref, samples)))).all()
    precision, recall = precision_recall(ref, samples)
    # Measured: precision 0.4710 vs 0.4705 (1 of 2000 samples), recall 0.5040 vs 0.5030 (1 of 1000 reference
    # points): float16 ties flip between TF's and torch's kernels; 1e-3 (+1e-12 for float round-off) allows one.
    assert abs(precision - expected["precision"]) <= 1e-3 + 1e-12
    assert abs(recall - expected["recall"]) <= 1e-3 + 1e-12


def brute_force_precision_recall(ref, samples, k=3):
    """Independent float64 reference: full distance matrices, k-th neighbour by sorting, `<=` balls."""
    def distances(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    ref, samples = ref.astype(np.float64), samples.astype(np.float64)
    ref_radii = np.sort(distances(ref, ref), axis=1)[:, k]
    sample_radii = np.sort(distances(samples, samples), axis=1)[:, k]
    cross = distances(ref, samples)
    return (cross <= ref_radii[:, None]).any(0).mean(), (cross <= sample_radii[None, :]).any(1).mean()


def test_float32_precision_recall_agree_with_a_brute_force_float64_computation():
    rng = np.random.default_rng(8)
    ref = rng.standard_normal((150, 12)).astype(np.float32)
    samples = (rng.standard_normal((230, 12)) + 0.4).astype(np.float32)
    expected = brute_force_precision_recall(ref, samples)
    assert 0.1 < expected[0] < 0.9 and 0.1 < expected[1] < 0.9
    # Blocks of 64 exercise the running k-nearest merge and the block-wise OR of ADM's 10,000 blocks.
    for block_size in (64, 10000):
        assert precision_recall(ref, samples, precision="float32", block_size=block_size) == \
            pytest.approx(expected, abs=1e-12)


def test_distance_blocks_are_float16_unless_float16_overflows():
    rng = np.random.default_rng(9)
    a, b = (torch.tensor(rng.uniform(0, 4, (20, 64)), dtype=torch.float32) for _ in range(2))
    exact = ((a[:, None].double() - b[None].double()) ** 2).sum(-1)
    block = distance_block(a, b)
    assert block.dtype == torch.float32 and torch.equal(block.half().float(), block)  # float16 values
    assert not torch.equal(block.double(), exact) and torch.allclose(block.double(), exact, rtol=2e-2)
    # Norms of 100 * [0, 4]^64 overflow float16 (max 65504): the whole block is recomputed in float32.
    big = distance_block(100 * a, 100 * b)
    assert torch.equal(big, squared_distances(100 * a, 100 * b))
    assert torch.allclose(big.double(), exact * 1e4, rtol=1e-5)
    assert precision_recall(100 * a, 100 * b) == precision_recall(100 * a, 100 * b, precision="float32")
    with pytest.raises(ValueError, match="unknown distance precision 'float8'"):
        distance_block(a, b, "float8")


def test_fid_label_names_fid_50k_only_at_50000():
    assert fid_label(50000) == "FID-50K"
    assert fid_label(10000) == "FID (N=10000)"
    assert fid_label(50000, "digits") == "digits FID (N=50000)"  # never mistaken for an Inception FID-50K


# Inputs ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("images, problem", [
    (np.zeros((4, 8, 8, 3), np.float32), "got float32 [4, 8, 8, 3]"),
    (np.zeros((4, 8, 8), np.uint8), "got uint8 [4, 8, 8]"),
    (np.zeros((4, 3, 8, 8), np.uint8), "got uint8 [4, 3, 8, 8]"),
    (np.zeros((0, 8, 8, 3), np.uint8), "holds no images"),
])
def test_samples_of_the_wrong_dtype_or_shape_fail_with_one_line(tmp_path, images, problem):
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=images)
    for source in (images, path):
        with pytest.raises(FIDError, match=r"uint8 images \[N, H, W, 3\]|holds no images") as error:
            open_images(source)
        assert problem in str(error.value) and "\n" not in str(error.value)


def test_npz_images_stream_the_same_pixels_in_batches(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, (23, 5, 7, 3), dtype=np.uint8)
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "samples.npz", arr_0=images, arr_1=np.arange(23))
        source = NpzImages(tmp_path / "samples.npz")
        batches = list(source.batches(batch_size=10))
        assert len(source) == 23 and [len(batch) for batch in batches] == [10, 10, 3]
        np.testing.assert_array_equal(np.concatenate(batches), images)


def test_center_crop_follows_adm_box_halving_then_bicubic_short_side():
    image = Image.fromarray(np.random.default_rng(6).integers(0, 256, (150, 700, 3), dtype=np.uint8))
    cropped = center_crop_arr(image, 32)
    assert cropped.shape == (32, 32, 3) and cropped.dtype == np.uint8
    halved = image.resize((350, 75), Image.BOX).resize((350 // 2, 75 // 2), Image.BOX)  # short side < 64
    expected = np.asarray(halved.resize((round(175 * 32 / 37), 32), Image.BICUBIC))
    left = (expected.shape[1] - 32) // 2
    np.testing.assert_array_equal(cropped, expected[:, left: left + 32])


def test_image_folders_of_mixed_sizes_and_corrupt_files_fail_with_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "0.png")
    Image.new("RGB", (9, 8)).save(tmp_path / "a" / "1.png")
    with pytest.raises(FIDError, match=r"1.png is 9x8 but .*0.png is 8x8; images in a folder must share"):
        list(FolderImages(str(tmp_path)).batches(4))
    assert [batch.shape for batch in FolderImages(str(tmp_path), image_size=4).batches(4)] == [(2, 4, 4, 3)]
    (tmp_path / "a" / "2.png").write_bytes(b"not a png")
    with pytest.raises(FIDError, match=r"cannot read image .*2.png"):
        list(FolderImages(str(tmp_path), image_size=4).batches(4))
    with pytest.raises(FIDError, match="no images"):
        FolderImages(str(tmp_path / "missing"))


# Reference files ------------------------------------------------------------------------------------------

def write_reference(path, **overrides):
    arrays = {"mu": np.zeros(2048), "sigma": np.eye(2048), "mu_s": np.zeros(2023), "sigma_s": np.eye(2023),
              "arr_0": np.zeros((5, 8, 8, 3), np.uint8)}
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return str(path)


def test_an_adm_layout_reference_loads(tmp_path):
    reference = load_reference(write_reference(tmp_path / "ref.npz"))
    assert reference.mu.shape == (2048,) and reference.sigma_s.shape == (2023, 2023)
    assert len(reference.images) == 5 and len(reference.sha256) == 64
    bare = load_reference(write_reference(tmp_path / "bare.npz", mu_s=None, sigma_s=None, arr_0=None))
    assert bare.mu_s is None and bare.images is None
    # ADM computes the statistics of a file holding only images from those images.
    images_only = load_reference(write_reference(tmp_path / "images.npz", mu=None, sigma=None, mu_s=None,
                                                 sigma_s=None))
    assert images_only.mu is None and len(images_only.images) == 5
    assert images_only.statistics_source() == "arr_0 (5 images)"


@pytest.mark.parametrize("overrides, problem", [
    ({"sigma": None}, "missing 'sigma'"),
    ({"mu": None}, "missing 'mu'"),
    ({"mu": np.zeros(64), "sigma": np.eye(64)}, "'mu' has shape [64], expected [2048] (inception pool features); "
     "made with --features digits?"),
    ({"sigma_s": np.eye(7)}, "'sigma_s' has shape [7, 7], expected [2023, 2023] (inception spatial features); "
     "made with another feature network?"),
    ({"sigma_s": None}, "missing 'sigma_s'"),
    ({"mu": None, "sigma": None, "arr_0": None}, "missing 'arr_0' (has ['mu_s', 'sigma_s']); ADM's layout is "
     "arr_0 (uint8 reference images [N, H, W, 3]) with optional mu, sigma, mu_s, sigma_s"),
    ({"mu": None, "sigma": None}, "missing 'mu' (has ['arr_0', 'mu_s', 'sigma_s'])"),
    ({"sigma": np.full((2048, 2048), np.nan)}, "'sigma' has non-finite values"),
    ({"arr_0": np.zeros((5, 8, 8, 3), np.float32)}, "arr_0 must be uint8 images [N, H, W, 3], got float32"),
])
def test_a_bad_reference_fails_with_one_line_naming_the_problem(tmp_path, overrides, problem):
    path = write_reference(tmp_path / "ref.npz", **overrides)
    with pytest.raises(FIDError) as error:
        load_reference(path)
    assert problem in str(error.value) and path in str(error.value) and "\n" not in str(error.value)


def test_a_reference_that_is_not_an_npz_fails_with_one_line(tmp_path):
    (tmp_path / "ref.npz").write_text("hello")
    with pytest.raises(FIDError, match="not a readable .npz"):
        load_reference(tmp_path / "ref.npz")
    with pytest.raises(FIDError, match="reference file not found"):
        load_reference(tmp_path / "none.npz")


def test_the_command_line_prints_one_error_line_and_exits_2(tmp_path, capsys):
    np.savez(tmp_path / "samples.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    ref = write_reference(tmp_path / "ref.npz", sigma=None)
    assert main(["calc", str(tmp_path / "samples.npz"), "--ref", ref]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("fid calc: error: reference") and "'sigma'" in error


# Inception weights ----------------------------------------------------------------------------------------

@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No cached weights, no env variable, and a download that fails as it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(fid.weights.WEIGHTS_ENV, raising=False)

    def no_network(url, path):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(fid.weights, "download_file", no_network)


def test_offline_without_weights_names_the_file_the_flag_and_the_url(offline, tmp_path, capsys):
    with pytest.raises(FIDError) as error:
        fid.weights.resolve_inception_weights()
    message = str(error.value)
    for needed in ("pt_inception-2015-12-05-6726825d.pth", "--inception-weights", "FID_INCEPTION_WEIGHTS",
                   "https://github.com/toshas/torch-fidelity/releases/", "Network is unreachable"):
        assert needed in message
    assert "\n" not in message
    np.savez(tmp_path / "samples.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    ref = write_reference(tmp_path / "ref.npz")
    assert main(["calc", str(tmp_path / "samples.npz"), "--ref", ref]) == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in capsys.readouterr().err


def test_weights_come_from_the_flag_then_the_env_then_the_cache(offline, tmp_path, monkeypatch):
    flag, env = tmp_path / "flag.pth", tmp_path / "env.pth"
    flag.touch()
    env.touch()
    with pytest.raises(FIDError, match=f"no file at {tmp_path / 'missing.pth'}"):
        fid.weights.resolve_inception_weights(str(tmp_path / "missing.pth"))
    monkeypatch.setenv(fid.weights.WEIGHTS_ENV, str(env))
    assert fid.weights.resolve_inception_weights(str(flag)) == str(flag)
    assert fid.weights.resolve_inception_weights() == str(env)
    monkeypatch.delenv(fid.weights.WEIGHTS_ENV)
    cached = fid.weights.hub_cache_paths()[1]
    os.makedirs(os.path.dirname(cached))
    open(cached, "wb").close()
    assert fid.weights.resolve_inception_weights() == cached


def test_weights_that_are_not_an_inception_state_dict_are_refused(tmp_path):
    import torch

    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(FIDError, match="does not hold the FID Inception state_dict"):
        fid.weights.load_inception_state_dict(str(tmp_path / "other.pth"))


# Report ---------------------------------------------------------------------------------------------------

def test_report_files_hold_every_metric_and_leave_no_temporary_files(tmp_path):
    result = {"fid_label": "FID-50K", "num_samples": 50000, "fid": 2.27, "sfid": None,
              "inception_score": 278.2, "inception_score_std": 3.1, "precision": 0.83, "recall": 0.57,
              "kid": 0.0011, "kid_std": 0.0001, "samples": "s.npz", "reference": "r.npz",
              "reference_sha256": "0" * 64, "reference_num_images": 10000,
              "reference_statistics": "mu/sigma in the file", "inception_score_split_rule": IS_SPLIT_RULES["adm"],
              "precision_recall_distances": DISTANCE_PRECISIONS["float16-first"], "feature_extractor": "x",
              "feature_network": "inception", "feature_weights": "w.pth", "feature_weights_sha256": "1" * 64,
              "class_accuracy": None, "class_accuracy_per_class": None, "device": "cuda",
              "tf32_convolutions": True, "tf32_matmul": False,
              "versions": {"torch": "2.15.0", "torch-fidelity": "0.3.0", "scipy": "1.17.0", "numpy": "2.3.0"},
              "seconds": 12.5, "timings": {
                  "features_samples": 3.25, "features_reference": "cached", "statistics": 0.5, "fid": 8.1,
                  "sfid": 7.9, "inception_score": 0.01, "precision_recall": 0.3, "kid": 1.2, "class_accuracy": None,
                  "total": 12.5}}
    json_path, md_path = write_report(result, str(tmp_path / "out"))
    with open(json_path) as file:
        assert json.load(file) == result
    with open(md_path) as file:
        markdown = file.read()
    assert markdown.startswith("# FID-50K: 2.27") and "| Inception Score | 278.20 +- 3.10 |" in markdown
    assert "n/a (reference has no mu_s/sigma_s)" in format_table(result)
    assert "| feature network | inception |" in markdown
    assert "| Class accuracy | n/a (needs a network of the samples' classes" in markdown
    assert "| KID | 0.00110 +- 0.00010 (x 1e3: 1.10 +- 0.10) |" in markdown
    digits = dict(result, class_accuracy=0.95, class_accuracy_per_class={0: 1.0, 1: 0.9})
    assert "0.9500 (per class 0: 1.00, 1: 0.90)" in format_table(digits)
    small = format_table(dict(result, feature_network="digits", inception_score=3.73, inception_score_std=0.0,
                              inception_score_splits=1))
    assert re.search(r"Inception Score \(digits network's classes\) +3\.73 \(one split: no spread\)", small)
    for row in ("| IS splits | contiguous chunks of 5000 samples, the last one shorter (ADM's evaluator) |",
                "| P/R distances | float16 distance blocks, float32 where a block overflows",
                "| TF32 convolutions | on |", "| TF32 matmuls | off |",
                "| versions | torch 2.15.0, torch-fidelity 0.3.0, scipy 1.17.0, numpy 2.3.0 |"):
        assert row in markdown
    assert sorted(os.listdir(tmp_path / "out")) == ["report.json", "report.md"]


def test_report_shows_the_time_of_every_stage(tmp_path):
    timings = {"features_samples": 3.25, "features_reference": "cached", "statistics": 0.5, "fid": 8.1, "sfid": 7.9,
               "inception_score": 0.01, "precision_recall": 0.3, "kid": 1.2, "class_accuracy": None, "total": 12.5}
    result = {"fid_label": "FID (N=8)", "fid": 2.0, **{key: None for key, _ in (
        ("sfid", 0), ("inception_score", 0), ("precision", 0), ("recall", 0), ("kid", 0), ("class_accuracy", 0))},
        "num_samples": 8, "samples": "s.npz", "reference": "r.npz", "reference_sha256": "0", "reference_num_images": 0,
        "reference_statistics": "mu/sigma in the file", "inception_score_split_rule": "adm",
        "precision_recall_distances": "float32", "feature_network": "inception", "feature_extractor": "x",
        "feature_weights": "w.pth", "feature_weights_sha256": "1", "device": "cpu", "tf32_convolutions": False,
        "tf32_matmul": False, "versions": {}, "seconds": 12.5, "timings": timings}
    assert [key for key, _ in TIMING_ROWS] == list(timings)  # every stage the pipeline times has a row
    markdown = format_markdown(result)
    for row in ("| stage | seconds |", "| features: samples | 3.25 |", "| features: reference | cached |",
                "| Frechet distance: FID | 8.10 |", "| Frechet distance: sFID | 7.90 |", "| KID | 1.20 |",
                "| class accuracy | - |", "| total | 12.50 |"):
        assert row in markdown
    table = format_table(result)
    assert "time per stage (s)" in table and ["Frechet", "distance:", "FID", "8.10"] in [
        line.split() for line in table.splitlines()]
    assert "time per stage" not in format_table(result, stages=False)
    assert format_timings_line(result) == (
        "time per stage (s): features: samples 3.25, features: reference cached, statistics (mean, cov) 0.50, "
        "Frechet distance: FID 8.10, Frechet distance: sFID 7.90, Inception Score 0.01, precision/recall 0.30, "
        "KID 1.20, class accuracy -, total 12.50")
    # A report.json from before the stages were timed still prints, without the stage table.
    older = {key: value for key, value in result.items() if key != "timings"}
    assert "| stage |" not in format_markdown(older) and "time per stage" not in format_table(older)


def test_public_api():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fid.frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2)) == pytest.approx(2.0)


# Bad input fails before any Inception pass ----------------------------------------------------------------

@pytest.fixture
def no_inception(monkeypatch):
    """Building the network is the expensive work: these inputs must fail before it."""
    def fail(*args, **kwargs):
        raise AssertionError("the Inception network was built before the input was checked")

    monkeypatch.setattr(fid.networks, "InceptionFeatures", fail)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("num_samples, flags, problem", [
    (8, ["--device", "cuda"], "--device cuda: torch 2"),
    (8, ["--device", "banana"], "--device banana is not a device name; use cpu, cuda or cuda:N"),
    (1, [], "samples.npz: FID needs at least 2 samples for a covariance, got 1"),
    (3, [], "samples.npz: precision/recall (k=3) need at least 4 images, got 3"),
])
def test_bad_input_fails_with_one_line_before_inception(no_inception, tmp_path, capsys, num_samples, flags,
                                                         problem):
    np.savez(tmp_path / "samples.npz", arr_0=np.zeros((num_samples, 8, 8, 3), np.uint8))
    ref = write_reference(tmp_path / "ref.npz")
    assert main(["calc", str(tmp_path / "samples.npz"), "--ref", ref, *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and problem in error


def test_too_few_reference_images_name_the_metric(no_inception, tmp_path):
    samples = np.zeros((8, 8, 8, 3), np.uint8)
    ref = write_reference(tmp_path / "ref.npz", arr_0=np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(FIDError, match=r"ref.npz arr_0: precision/recall \(k=3\) need at least 4 images, got 3"):
        fid.compute_metrics(samples, ref)
    ref = write_reference(tmp_path / "one.npz", mu=None, sigma=None, mu_s=None, sigma_s=None,
                          arr_0=np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(FIDError, match="statistics from arr_0 need at least 2 images, got 1"):
        fid.compute_metrics(samples, ref)
    with pytest.raises(FIDError, match="unknown Inception Score split rule 'ten'"):
        fid.compute_metrics(samples, ref, is_split_rule="ten")


# Reference feature cache ----------------------------------------------------------------------------------

class CountingExtractor:
    """Stands in for InceptionFeatures: seeded random features, and a count of the passes."""
    name, feature_dims = "inception", {"pool": 2048, "spatial": 2023}
    weights_sha256 = "f" * 64
    device = torch.device("cpu")

    def __init__(self):
        self.passes = 0

    def __call__(self, source, batch_size=200, num_workers=0, progress=True, desc="features"):
        self.passes += 1
        rng = np.random.default_rng(self.passes)
        return {name: rng.standard_normal((len(source), dim)).astype(np.float32)
                for name, dim in (("pool", 2048), ("spatial", 2023), ("logits", 1008))}


def test_reference_features_are_cached_on_disk_by_file_and_weights_hash(tmp_path):
    ref = write_reference(tmp_path / "ref.npz", mu=None, sigma=None, mu_s=None, sigma_s=None)
    extractor, cache_dir = CountingExtractor(), str(tmp_path / "cache")
    first = reference_image_features(load_reference(ref), extractor, cache_dir, 10, 0, False)
    second = reference_image_features(load_reference(ref), extractor, cache_dir, 10, 0, False)
    assert extractor.passes == 1 and np.array_equal(first["pool"], second["pool"])
    assert np.array_equal(first["spatial"], second["spatial"])
    assert os.listdir(cache_dir) == [f"reference-{load_reference(ref).sha256}-inception-{'f' * 64}.npz"]
    # Other weights: other features, another file.
    extractor.weights_sha256 = "e" * 64
    reference_image_features(load_reference(ref), extractor, cache_dir, 10, 0, False)
    assert extractor.passes == 2 and len(os.listdir(cache_dir)) == 2


@pytest.mark.parametrize("corruption", [b"not a zip", "truncated", "wrong shape"])
def test_a_corrupt_cache_is_recomputed_with_a_one_line_warning(tmp_path, corruption):
    ref = write_reference(tmp_path / "ref.npz")
    extractor, cache_dir = CountingExtractor(), str(tmp_path / "cache")
    reference_image_features(load_reference(ref), extractor, cache_dir, 10, 0, False)
    (path,) = [os.path.join(cache_dir, name) for name in os.listdir(cache_dir)]
    if corruption == "truncated":
        with open(path, "rb") as file:
            corruption = file.read()[:1000]
    if corruption == "wrong shape":
        np.savez(path, pool=np.zeros((5, 7)), spatial=np.zeros((5, 2023)))
    else:
        with open(path, "wb") as file:
            file.write(corruption)
    with pytest.warns(UserWarning, match="ignoring the corrupt feature cache") as caught:
        features = reference_image_features(load_reference(ref), extractor, cache_dir, 10, 0, False)
    assert extractor.passes == 2 and "\n" not in str(caught[0].message)
    assert features["pool"].shape == (5, 2048) and sorted(os.listdir(cache_dir)) == [os.path.basename(path)]
    reference_image_features(load_reference(ref), extractor, cache_dir, 10, 0, False)  # rewritten: read back
    assert extractor.passes == 2


def test_a_singular_covariance_gives_one_plain_warning_not_scipys():
    from scipy.linalg import LinAlgWarning

    generator = np.random.default_rng(0)
    x, y = generator.normal(size=(50, 10)), generator.normal(1.0, size=(50, 10))
    x[:, 0] = y[:, 0] = 0  # a feature no image activates: exactly singular covariances
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distance = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(distance) and not any(issubclass(w.category, LinAlgWarning) for w in caught)
    assert [str(w.message).split(" (")[0] for w in caught] == ["the covariance product of the 10 features is singular"]
