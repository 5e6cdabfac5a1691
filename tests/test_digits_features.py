"""The digits network (fid/digits_network.py) and its scores (fid/digits.py): deterministic training, the
weights cache, held-out accuracy, the floor, class accuracy and `fid calc|ref --features digits`.

One training takes about 3 s on one CPU thread; the module trains it once, plus the tests that must train.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import fid.cache
import fid.digits_network
from fid import compute_metrics, load_reference
from fid.cli import main
from fid.digits import DigitsFeatures, real_digits, real_digits_floor, real_digits_reference, reference_like
from fid.digits_network import held_out_accuracy, train_digits_cnn, weights_file, write_network
from fid.errors import FIDError


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Weights and reference features go to a temporary folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("digits-cache")
        patch.setenv(fid.cache.CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def extractor(cache_dir):
    return DigitsFeatures("cpu", cache_dir)


def noise_images(num_images, image_size=16, seed=0):
    grey = np.random.default_rng(seed).integers(0, 256, (num_images, image_size, image_size, 1), dtype=np.uint8)
    return np.repeat(grey, 3, axis=-1)


def score(images, extractor, labels=None):
    return compute_metrics(images, real_digits_reference(images.shape[1]), extractor=extractor, labels=labels,
                           num_workers=0, progress=False, kid=False)


# Training and the weights cache -----------------------------------------------------------------------------

def test_two_trainings_from_scratch_give_the_same_bits_and_leave_torch_as_it_was(extractor, tmp_path):
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    first, second = train_digits_cnn(), train_digits_cnn()
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), state)  # a private seed: the caller's random stream is untouched
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    hashes = [write_network(str(tmp_path / f"{index}.safetensors"), network, held_out_accuracy(network))
              for index, network in enumerate((first, second))]
    assert hashes[0] == hashes[1] == extractor.weights_sha256  # the module's extractor trained the same bits


def test_held_out_accuracy_is_high(extractor):
    assert extractor.held_out_accuracy >= 0.97  # 98.9% measured (docs/fid.md)
    assert extractor.held_out_accuracy == pytest.approx(held_out_accuracy(extractor.network), abs=1e-6)


def test_a_second_build_loads_the_cached_weights_instead_of_training(extractor, cache_dir, monkeypatch):
    def fail():
        raise AssertionError("the digits network was trained although its weights were cached")

    monkeypatch.setattr(fid.digits_network, "train_digits_cnn", fail)
    loaded = DigitsFeatures("cpu", cache_dir)
    assert loaded.weights_sha256 == extractor.weights_sha256 and loaded.weights_path == extractor.weights_path
    images = real_digits(16, "held-out")[0][:20]
    for mine, cached in zip(extractor.batch(images), loaded.batch(images), strict=True):
        assert torch.equal(mine, cached)


@pytest.mark.parametrize("corruption", ["flipped byte", "no hash file"])
def test_a_corrupt_cache_is_retrained_with_one_warning_line(extractor, cache_dir, tmp_path, corruption):
    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    path = weights_file(str(copy))
    if corruption == "flipped byte":
        data = bytearray(open(path, "rb").read())
        data[-1] ^= 1
        open(path, "wb").write(bytes(data))
    else:
        os.remove(f"{path}.sha256")
    with pytest.warns(UserWarning, match="ignoring the cached digits network") as caught:
        retrained = DigitsFeatures("cpu", str(copy))
    assert len(caught) == 1 and "\n" not in str(caught[0].message) and "retraining it" in str(caught[0].message)
    assert retrained.weights_sha256 == extractor.weights_sha256  # retrained to the same bits, and rewritten
    assert fid.digits_network.read_cached_network(path) is not None


# Scores -----------------------------------------------------------------------------------------------------

def test_the_floor_is_small_and_noise_or_one_digit_per_class_is_far(extractor):
    floor = real_digits_floor(16, extractor)
    assert 0 < floor["fid"] < 2.0 and floor["num_samples"] == 355  # 0.97 measured (docs/fid.md)
    assert floor["precision"] > 0.85 and floor["recall"] > 0.85 and floor["class_accuracy"] > 0.97
    noise = score(noise_images(355), extractor)
    assert noise["fid"] > 200 * floor["fid"] and noise["precision"] < 0.05
    # A model that draws one perfect digit per class: right classes, but far from the data and no recall.
    images, labels = real_digits(16, "held-out")
    one_per_class = np.concatenate([np.repeat(images[labels == digit][:1], 35, axis=0) for digit in range(10)])
    copies = score(one_per_class, extractor, labels=np.repeat(np.arange(10), 35))
    assert copies["class_accuracy"] >= 0.9 and copies["fid"] > 10 * floor["fid"] and copies["recall"] < 0.2


def test_class_accuracy_is_high_with_the_labels_and_low_with_permuted_labels(extractor):
    images, labels = real_digits(16, "held-out")
    right = score(images, extractor, labels)
    assert right["class_accuracy"] > 0.97 and set(right["class_accuracy_per_class"]) == set(range(10))
    assert min(right["class_accuracy_per_class"].values()) > 0.9
    permuted = score(images, extractor, np.random.default_rng(0).permutation(labels))
    assert permuted["class_accuracy"] < 0.25 and permuted["fid"] == right["fid"]  # FID does not see labels
    assert score(images, extractor)["class_accuracy"] is None  # an array without labels


def test_samples_of_another_size_are_scored_against_real_digits_of_that_size(extractor):
    reference = reference_like(noise_images(4, image_size=32))
    assert reference.path == "built-in digits, train split (1442 images, 32x32)" and len(reference.images) == 1442
    assert real_digits_floor(32, extractor)["fid"] < 2.0
    with pytest.raises(FIDError, match="samples are 16x8 but the built-in digits are square; pass --ref"):
        reference_like(np.zeros((4, 8, 16, 3), np.uint8))


# Command line ------------------------------------------------------------------------------------------------

def write_samples(path, num_images=40, labels=None):
    images, real_labels = real_digits(16, "held-out")
    np.savez(path, arr_0=images[:num_images], arr_1=real_labels[:num_images] if labels is None else labels)
    return str(path)


def test_calc_features_digits_writes_a_report_naming_the_network(extractor, tmp_path, capsys):
    samples = write_samples(tmp_path / "samples.npz")
    assert main(["calc", samples, "--features", "digits", "--no-progress", "--num-workers", "0"]) == 0
    with open(tmp_path / "report.json") as file:
        report = json.load(file)
    assert report["feature_network"] == "digits" and report["fid_label"] == "digits FID (N=40)"
    assert report["feature_weights_sha256"] == extractor.weights_sha256
    assert report["feature_weights"] == extractor.weights_path and "digits-cnn" in report["feature_extractor"]
    assert report["reference"] == "built-in digits, train split (1442 images, 16x16)"
    assert report["class_accuracy"] > 0.9 and report["fid"] < 20 and report["sfid"] is not None
    with open(tmp_path / "report.md") as file:
        markdown = file.read()
    assert markdown.startswith("# digits FID (N=40): ") and "| feature network | digits |" in markdown
    assert "| Class accuracy | " in capsys.readouterr().out.replace("Class accuracy  ", "| Class accuracy | ")


def test_ref_features_digits_writes_the_training_digits_statistics(extractor, tmp_path, capsys):
    out = str(tmp_path / "digits16.npz")
    assert main(["ref", "--features", "digits", "--out", out, "--no-progress"]) == 0
    with np.load(out) as reference:
        assert reference["arr_0"].shape == (1442, 16, 16, 3) and reference["mu"].shape == (64,)
        assert reference["sigma_s"].shape == (256, 256)
    samples = write_samples(tmp_path / "samples.npz")
    with_file = compute_metrics(samples, out, extractor=extractor, num_workers=0, progress=False, kid=False)
    built_in = compute_metrics(samples, real_digits_reference(16), extractor=extractor, num_workers=0,
                               progress=False, kid=False)
    assert with_file["fid"] == pytest.approx(built_in["fid"], rel=1e-6)
    assert with_file["precision"] == built_in["precision"]
    assert load_reference(out, "digits").mu.shape == (64,)
    capsys.readouterr()
    assert main(["calc", samples, "--ref", out, "--no-progress"]) == 2  # Inception, by default
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "expected [2048] (inception pool features); made with --features digits?" \
        in error


@pytest.mark.parametrize("labels, flags, problem", [
    (np.arange(40) % 11, ["--features", "digits"], "labels (arr_1) must be 40 class ids in 0..9, got int64 [40] "
     "from 0 to 10"),
    (None, ["--features", "digits", "--inception-weights", "w.pth"], "--inception-weights is for --features "
     "inception, not --features digits"),
    (None, [], "--ref is required with --features inception"),
])
def test_bad_digits_input_is_one_line(extractor, tmp_path, capsys, labels, flags, problem):
    samples = write_samples(tmp_path / "samples.npz", labels=labels)
    assert main(["calc", samples, *flags, "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and problem in error


def test_ref_without_images_needs_the_digits(tmp_path, capsys):
    assert main(["ref", "--out", str(tmp_path / "ref.npz")]) == 2
    assert "give IMAGES (an image folder or .npz), or --features digits" in capsys.readouterr().err
