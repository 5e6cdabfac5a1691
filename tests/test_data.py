"""Training data: the ImageFolder with ADM's crop, the digits, the (seed, epoch) batch order, latent sets."""
import json
import os

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from PIL import Image
from safetensors.torch import load_file
from tiny import write_corrupt_image, write_image_folder

import fid.images
import gen.data.latents
from common.digits import downscale_to_digits, load_digit_arrays, upscale_digits
from gen.data import (
    CorruptImageError,
    DigitsDataset,
    EpochBatchSampler,
    ImageFolderDataset,
    LatentDataset,
    LatentSetError,
    center_crop_arr,
    collate_skipping_unreadable,
)
from gen.data.images import SkippedImage
from gen.data.latents import MANIFEST, extract_latents, extraction_plan, shard_name


def test_image_folder_labels_by_sorted_folder_and_crops_like_adm(tmp_path):
    root = write_image_folder(tmp_path)
    dataset = ImageFolderDataset(root, image_size=16)
    assert dataset.classes == ["ant", "bee", "cat"]
    assert len(dataset) == 12
    image, label = dataset[0]
    assert dataset.files[0][0].endswith(os.path.join("ant", "0.png")) and label == 0
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    with Image.open(dataset.files[0][0]) as source:
        expected = center_crop_arr(source.convert("RGB"), 16)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected / 127.5 - 1, atol=1e-6)
    flipped, _ = dataset[(0, True)]
    assert torch.equal(flipped, image.flip(-1)) and not torch.equal(flipped, image)


def test_fid_uses_the_one_center_crop():
    assert fid.images.center_crop_arr is center_crop_arr


def test_unreadable_image_is_skipped_and_counted_or_named_when_strict(tmp_path):
    root = write_image_folder(tmp_path)
    broken = write_corrupt_image(root)
    dataset = ImageFolderDataset(root, image_size=16)
    index = next(i for i, (path, _) in enumerate(dataset.files) if path == broken)
    item = dataset[index]
    assert isinstance(item, SkippedImage) and item == broken
    images, labels, skipped = collate_skipping_unreadable([dataset[0], item, dataset[1]])
    assert images.shape == (2, 3, 16, 16) and labels.tolist() == [0, 0] and skipped == [broken]
    with pytest.raises(CorruptImageError, match="broken.png"):
        ImageFolderDataset(root, image_size=16, strict=True)[index]


def test_image_folder_without_classes_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderDataset(str(tmp_path), image_size=16)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ImageFolderDataset(str(tmp_path / "missing"), image_size=16)


# -- digits ----------------------------------------------------------------------------------------------------
def test_digits_are_the_real_scikit_learn_digits_upscaled_in_rgb():
    dataset = DigitsDataset(image_size=16)
    assert len(dataset) == 1797 and dataset.classes == [str(d) for d in range(10)]
    image, label = dataset[5]
    grey, labels = load_digit_arrays()
    assert label == labels[5] and image.shape == (3, 16, 16)
    assert image.min() >= -1 and image.max() <= 1 and image.max() > 0.5
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    # down again, the digit is close to the original 8x8 (bicubic up, box down: not exact)
    back = downscale_to_digits(upscale_digits(grey[:50], 16))
    assert np.abs(back - grey[:50].reshape(50, -1) * (16 / 255)).mean() < 1.0


# -- batch order -----------------------------------------------------------------------------------------------
def test_batch_order_depends_on_seed_and_epoch_only_and_processes_share_it():
    single = EpochBatchSampler(10, 4, seed=3)
    assert single.steps_per_epoch == 2 and len(single) == 2
    epoch0, again = list(single), list(EpochBatchSampler(10, 4, seed=3))
    assert epoch0 == again
    single.set_position(1)
    epoch1 = list(single)
    assert epoch1 != epoch0
    assert len({index for batch in epoch0 for index, _ in batch}) == 8  # no repeats; the last 2 dropped
    halves = [EpochBatchSampler(10, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    for half in halves:
        half.set_position(1)
    assert [a + b for a, b in zip(*map(list, halves), strict=True)] == epoch1
    single.set_position(1, start_batch=1)
    assert list(single) == epoch1[1:]


def test_flip_bits_are_random_or_off():
    keys = [key for batch in EpochBatchSampler(1000, 100, seed=0) for key in batch]
    assert 400 < sum(flip for _, flip in keys) < 600
    keys = [key for batch in EpochBatchSampler(1000, 100, seed=0, random_flip=False) for key in batch]
    assert not any(flip for _, flip in keys)


def test_batch_sampler_rejects_indivisible_batches_and_tiny_data():
    with pytest.raises(ValueError, match="not divisible"):
        EpochBatchSampler(100, 6, world_size=4)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        EpochBatchSampler(3, 4)


# -- latent sets -----------------------------------------------------------------------------------------------
def half_size_encoder(vae, images, generator=None):
    """A stand-in VAE: every second pixel, so the stored latents can be checked exactly."""
    return images[:, :, ::2, ::2] * 0.5


def extract(root, out, image_size=16, shard_size=5, vae_name="tiny"):
    dataset = ImageFolderDataset(root, image_size)
    plan = extraction_plan(dataset, vae_name=vae_name, image_size=image_size, latent_shape=(3, 8, 8),
                           shard_size=shard_size, dtype="float32", source=root, seed=0)
    return extract_latents(dataset, None, str(out), plan, accelerator=Accelerator(cpu=True), batch_size=4,
                           num_workers=0)


def test_latents_hold_each_image_and_its_flip_and_resume_by_shard(tmp_path, monkeypatch):
    monkeypatch.setattr(gen.data.latents, "encode", half_size_encoder)
    root = write_image_folder(tmp_path / "images")
    broken = write_corrupt_image(root)
    out = tmp_path / "latents"
    manifest = extract(root, out)
    assert manifest["complete"] and manifest["count"] == 12 and manifest["skipped"] == [broken]
    # 13 files in shards of 5; the unreadable one, cat/broken.png, is the last
    assert manifest["num_shards"] == 3 and [s["count"] for s in manifest["shards"]] == [5, 5, 2]
    images = ImageFolderDataset(root, 16)
    shard = load_file(out / shard_name(0))
    for row, index in enumerate(shard["indices"].tolist()):
        image, label = images[index]
        assert torch.equal(shard["latents"][row, 0], half_size_encoder(None, image[None])[0])
        assert torch.equal(shard["latents"][row, 1], half_size_encoder(None, image.flip(-1)[None])[0])
        assert shard["labels"][row] == label

    dataset = LatentDataset(str(out), vae_name="tiny", image_size=16)
    assert len(dataset) == 12 and dataset.shape == (3, 8, 8)
    latent, label = dataset[(0, True)]
    assert torch.equal(latent, shard["latents"][0, 1]) and label == shard["labels"][0]

    # resumption: finished shards are kept as they are, a missing one is made again, identically
    stamps = {name: os.stat(out / name).st_mtime_ns for name in (shard_name(0), shard_name(2))}
    os.remove(out / shard_name(1))
    manifest = read_json(out / MANIFEST)
    manifest["complete"] = False
    write_json(out / MANIFEST, manifest)
    extract(root, out)
    assert {name: os.stat(out / name).st_mtime_ns for name in stamps} == stamps
    assert len(LatentDataset(str(out))) == 12


def test_latent_set_of_another_vae_size_or_count_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(gen.data.latents, "encode", half_size_encoder)
    root = write_image_folder(tmp_path / "images")
    out = tmp_path / "latents"
    extract(root, out)
    with pytest.raises(LatentSetError, match="made with --vae tiny"):
        LatentDataset(str(out), vae_name="ema", image_size=16)
    with pytest.raises(LatentSetError, match="16-pixel images"):
        LatentDataset(str(out), vae_name="tiny", image_size=32)
    with pytest.raises(LatentSetError, match="other settings"):
        extract(root, out, shard_size=4)
    manifest = read_json(out / MANIFEST)
    tampered = json.loads(json.dumps(manifest))
    tampered["shards"][0]["count"] += 1
    tampered["count"] += 1
    write_json(out / MANIFEST, tampered)
    with pytest.raises(LatentSetError, match="holds 5 latents, the manifest says 6"):
        LatentDataset(str(out))
    write_json(out / MANIFEST, manifest)
    os.remove(out / shard_name(2))
    with pytest.raises(LatentSetError, match="missing"):
        LatentDataset(str(out))
    with pytest.raises(LatentSetError, match="no manifest.json"):
        LatentDataset(str(tmp_path))


def read_json(path):
    with open(path) as file:
        return json.load(file)


def write_json(path, value):
    with open(path, "w") as file:
        json.dump(value, file)
