"""Latent pre-extraction: encode a data set once with the VAE (each image and its mirror image, so flip
augmentation survives), and the data set that trains on the result.

A latent folder holds `manifest.json` (count, shape, dtype, VAE, image size, classes, shards with their sizes,
skipped files) and `shard-00000.safetensors`, ... with `latents` [n, 2, C, h, w] (index 1 on axis 1 is the
flipped image), `labels` [n] and `indices` [n] (positions in the image data set); made with a REPA encoder
(`features` in the manifest: its name, token grid and width), also `features` [n, 2, grid * grid, dim].
Shard i always holds images [i * shard_size, (i + 1) * shard_size), so any number of processes can fill in the
missing shards, and a rerun skips the finished ones (each is written under a temporary name, then renamed) and
redoes damaged ones.
"""
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from tqdm import tqdm

from common.errors import UserError
from common.files import atomic_open, save_safetensors
from common.processes import decided_by_main

from ..vae import encode
from .images import SkippedImage, collate_skipping_unreadable, split_key
from .transforms import horizontal_flip

MANIFEST = "manifest.json"
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
HEADER_DTYPES = {"float16": "F16", "float32": "F32", "bfloat16": "BF16"}  # as safetensors' headers spell them
# A finished manifest's keys and their types; a hash of the shards is not kept (gigabytes to read at each start).
FINISHED_KEYS = {"vae": str, "image_size": int, "shape": list, "dtype": str, "classes": list, "count": int,
                 "shards": list}


class LatentSetError(UserError, ValueError):
    pass


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def redo_hint(root) -> str:
    return (f"run extract_latents.py again with the arguments that made {root} (--output {root}) to redo it, "
            f"or extract into a new folder")


def read_manifest(root) -> dict:
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        raise LatentSetError(f"{root} holds no {MANIFEST}; make a latent set with extract_latents.py")
    try:
        with open(path) as file:
            manifest = json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:  # an interrupted copy, a hand edit
        raise LatentSetError(f"{path} is not valid JSON ({error}); delete it and {redo_hint(root)}") from None
    if not isinstance(manifest, dict):
        raise LatentSetError(f"{path} is not a latent manifest (a JSON object); delete it and {redo_hint(root)}")
    return manifest


def write_manifest(root, manifest: dict):
    with atomic_open(os.path.join(root, MANIFEST), "w") as file:
        json.dump(manifest, file, indent=1)


def vae_identity(name) -> str:
    """`--vae` as recorded: local folders by absolute path, so ./vae and /abs/vae are the same VAE."""
    return os.path.abspath(name) if os.path.isdir(str(name)) else str(name)


def extraction_plan(dataset, *, vae_name, image_size, latent_shape, shard_size, dtype, source, seed,
                    features=None) -> dict:
    """The settings an extraction is defined by; a resumed extraction must have the same ones. `features`:
    feature_plan(...) when a REPA encoder's features are stored beside the latents."""
    plan = dict(vae=vae_identity(vae_name), image_size=image_size, shape=list(latent_shape), dtype=dtype,
                shard_size=shard_size, source=str(source), source_count=len(dataset),
                num_shards=math.ceil(len(dataset) / shard_size), classes=list(dataset.classes),
                num_classes=len(dataset.classes), seed=seed, flipped=True)
    return plan if features is None else dict(plan, features=features)


def feature_plan(enc_type: str, grid: int, dim: int) -> dict:
    """What a latent set's stored encoder features are: the encoder (a folder by its absolute path), the token grid
    they were pooled or resized to, their width."""
    return {"enc_type": vae_identity(enc_type), "grid": grid, "dim": dim}


def feature_shape(manifest: dict) -> list[int] | None:
    """[grid * grid, dim] of a set's stored features per image and view; None when it stores none."""
    features = manifest.get("features")
    return None if features is None else [features["grid"] ** 2, features["dim"]]


def start_extraction(root, plan: dict):
    """Write the plan as an unfinished manifest, or check that an unfinished one has the same plan."""
    os.makedirs(root, exist_ok=True)
    if os.path.isfile(os.path.join(root, MANIFEST)):
        previous = read_manifest(root)
        changed = {key: (previous.get(key), value) for key, value in plan.items() if previous.get(key) != value}
        if changed:
            details = ", ".join(f"{key}: {old!r} there, {new!r} now" for key, (old, new) in changed.items())
            raise LatentSetError(f"{root} holds latents made with other settings ({details}); "
                                 f"use another --output folder or the same settings")
        return
    write_manifest(root, dict(plan, complete=False))


@torch.no_grad()
def encode_shard(dataset, shard: int, plan: dict, vae, device, batch_size: int, num_workers: int,
                 encoder=None) -> tuple[dict, list]:
    """(tensors, skipped paths) of shard `shard`: the latents of each readable image and of its mirror image, and
    with an `encoder`, its features of both."""
    first = shard * plan["shard_size"]
    indices = list(range(first, min(first + plan["shard_size"], len(dataset))))
    loader = torch.utils.data.DataLoader(IndexedSubset(dataset, indices), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=collate_with_indices)
    generator = torch.Generator(device).manual_seed(plan["seed"] * 100_003 + shard)  # a rerun draws the same
    dtype = DTYPES[plan["dtype"]]
    latents, features, labels, kept, skipped = [], [], [], [], []
    for images, batch_labels, batch_indices, batch_skipped in loader:
        skipped += batch_skipped
        if images is None:
            continue
        both_views = torch.cat([images.to(device), horizontal_flip(images.to(device))])
        latents.append(by_view(encode(vae, both_views, generator), dtype))
        if encoder is not None:
            features.append(by_view(encoder(both_views, plan["features"]["grid"]), dtype))
        labels.append(batch_labels)
        kept.append(batch_indices)
    tensors = dict(latents=stacked(latents, [2, *plan["shape"]], dtype), labels=stacked(labels, [], torch.long),
                   indices=stacked(kept, [], torch.long))
    if encoder is not None:
        tensors["features"] = stacked(features, [2, *feature_shape(plan)], dtype)
    return tensors, skipped


def by_view(both_views: torch.Tensor, dtype) -> torch.Tensor:
    """[2B, ...] (the images, then their mirror images) -> [B, 2, ...] on the CPU in `dtype`."""
    return torch.stack(both_views.float().chunk(2), dim=1).to("cpu", dtype)


def stacked(pieces: list, item_shape: list, dtype) -> torch.Tensor:
    """The batches of a shard concatenated; an empty [0, *item_shape] tensor when every image was unreadable."""
    return torch.cat(pieces) if pieces else torch.zeros([0, *item_shape], dtype=dtype)


class IndexedSubset(torch.utils.data.Dataset):
    """Items of `dataset` at `indices`, each returned with its index."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, position):
        index = self.indices[position]
        return index, self.dataset[index]


def collate_with_indices(items):
    images, labels, skipped = collate_skipping_unreadable([item for _, item in items])
    kept = torch.tensor([index for index, item in items if not isinstance(item, SkippedImage)], dtype=torch.long)
    return images, labels, kept, list(skipped)


def shard_problem(path, manifest: dict, count=None, size=None) -> str | None:
    """What is wrong with a shard, from its size and header alone (cheap), checked against the manifest or
    plan: missing, truncated, unreadable, of another shape or dtype, or of another `count`; None when intact."""
    if not os.path.isfile(path):
        return "is missing"
    if size is not None and os.path.getsize(path) != size:
        return f"has {os.path.getsize(path):,} bytes, the manifest says {size:,} (truncated or replaced)"
    stored = feature_shape(manifest)
    names = ("latents", "labels", "indices") + (("features",) if stored else ())
    try:
        with safe_open(path, framework="pt") as file:
            shapes = {name: file.get_slice(name).get_shape() for name in names}
            dtype = file.get_slice("latents").get_dtype()
    except Exception as error:  # SafetensorError: truncated header or data, another file, a tensor missing
        return f"is not a readable shard ({' '.join(str(error).split())})"
    rows = shapes["labels"][0]
    expected = [rows, 2, *manifest["shape"]]
    if shapes["latents"] != expected or shapes["indices"] != [rows]:
        return f"holds latents {shapes['latents']}, the manifest's shape {manifest['shape']} says {expected}"
    if stored and shapes["features"] != [rows, 2, *stored]:
        return f"holds features {shapes['features']}, the manifest says [{rows}, 2, {stored[0]}, {stored[1]}]"
    if dtype != HEADER_DTYPES.get(manifest["dtype"]):
        return f"holds {dtype} latents, the manifest says {manifest['dtype']}"
    if count is not None and rows != count:
        return f"holds {rows} latents, the manifest says {count}"
    return None


def extract_latents(dataset, vae, root, plan: dict, *, accelerator, batch_size: int = 32, num_workers: int = 4,
                    encoder=None):
    """Encode the shards of `dataset` missing from `root`, spread over the processes (with the REPA `encoder`
    that plan["features"] names, its features too); then, on the main process, complete the manifest. Returns the
    manifest."""
    decided_by_main(accelerator, lambda: start_extraction(root, plan), LatentSetError)
    todo = []
    for shard in range(accelerator.process_index, plan["num_shards"], accelerator.num_processes):
        path = os.path.join(root, shard_name(shard))
        problem = shard_problem(path, plan)
        if problem and os.path.isfile(path):  # damaged after it was written (a copy cut short): encode it again
            print(f"warning: {path} {problem}; encoding it again", file=sys.stderr)
        if problem:
            todo.append(shard)
    progress = tqdm(todo, desc=f"encoding (process {accelerator.process_index})", unit="shard",
                    disable=not accelerator.is_local_main_process)
    for shard in progress:
        tensors, skipped = encode_shard(dataset, shard, plan, vae, accelerator.device, batch_size, num_workers,
                                        encoder)
        path = os.path.join(root, shard_name(shard))
        save_safetensors({k: v.contiguous() for k, v in tensors.items()}, path,  # a shard exists once whole
                         metadata={"skipped": json.dumps(skipped)})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish_manifest(root)
    accelerator.wait_for_everyone()
    return read_manifest(root)


def finish_manifest(root) -> dict:
    """Count the shards and record the skipped images; mark the set complete."""
    manifest = read_manifest(root)
    shards, skipped = [], []
    for shard in range(manifest["num_shards"]):
        path = os.path.join(root, shard_name(shard))
        with safe_open(path, framework="pt") as file:
            shards.append({"file": shard_name(shard), "count": file.get_slice("labels").get_shape()[0],
                           "bytes": os.path.getsize(path)})  # the size check that catches a truncated copy
            skipped += json.loads((file.metadata() or {}).get("skipped", "[]"))
    manifest.update(shards=shards, count=sum(s["count"] for s in shards), skipped=skipped, complete=True)
    write_manifest(root, manifest)
    return manifest


def check_latent_set(root, manifest: dict, *, vae_name=None, image_size=None):
    """Fail with a clear message when the set is unfinished, made for another VAE or size, or incomplete."""
    if not manifest.get("complete"):
        raise LatentSetError(f"the latent set {root} is unfinished; run extract_latents.py again with the same "
                             f"arguments to finish it")
    check_manifest_keys(root, manifest)
    if vae_name is not None and manifest["vae"] != vae_identity(vae_name):
        raise LatentSetError(f"the latents in {root} were made with --vae {manifest['vae']}, this run uses "
                             f"--vae {vae_name}; pass --vae {manifest['vae']} or extract them again")
    if image_size is not None and manifest["image_size"] != image_size:
        raise LatentSetError(f"the latents in {root} are of {manifest['image_size']}-pixel images, this run "
                             f"uses --image-size {image_size}; pass --image-size {manifest['image_size']} "
                             f"or extract them again")
    for shard in manifest["shards"]:
        path = os.path.join(root, shard["file"])
        problem = shard_problem(path, manifest, count=shard["count"], size=shard.get("bytes"))
        if problem:
            raise LatentSetError(f"{path} {problem}; {redo_hint(root)}")
    if sum(shard["count"] for shard in manifest["shards"]) != manifest["count"]:
        raise LatentSetError(f"the shards of {root} do not add up to the manifest's count {manifest['count']}; "
                             f"{redo_hint(root)}")


def check_manifest_keys(root, manifest: dict):
    """A finished manifest has every key, of its type, and shards that name a file and a count."""
    path = os.path.join(root, MANIFEST)
    for key, kind in FINISHED_KEYS.items():
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            found = "lacks it" if key not in manifest else f"holds {manifest[key]!r}"
            raise LatentSetError(f"{path}: '{key}' must be a {kind.__name__} ({found}); {redo_hint(root)}")
    shape = manifest["shape"]
    if len(shape) != 3 or not all(positive_int(side) for side in shape):
        raise LatentSetError(f"{path}: 'shape' must be [channels, height, width], got {shape}; {redo_hint(root)}")
    if manifest["dtype"] not in HEADER_DTYPES:
        raise LatentSetError(f"{path}: 'dtype' must be one of {sorted(HEADER_DTYPES)}, got {manifest['dtype']!r}; "
                             f"{redo_hint(root)}")
    features = manifest.get("features")
    if features is not None and not (isinstance(features, dict) and isinstance(features.get("enc_type"), str) and
                                     all(positive_int(features.get(key)) for key in ("grid", "dim"))):
        raise LatentSetError(f"{path}: 'features' must be {{\"enc_type\": ..., \"grid\": ..., \"dim\": ...}} "
                             f"with positive whole grid and dim, got {features!r}; {redo_hint(root)}")
    for shard in manifest["shards"]:
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str) and isinstance(shard.get("count"), int)):
            raise LatentSetError(f"{path}: each of 'shards' must be {{\"file\": ..., \"count\": ...}}, got {shard!r}; "
                                 f"{redo_hint(root)}")


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_stored_features(root, manifest: dict, enc_type: str):
    """The set stores the features of `enc_type` (REPA's encoder), or the one-line error saying how to make them."""
    stored = manifest.get("features")
    if stored is None:
        raise LatentSetError(f"the latent set {root} holds no encoder features for REPA; extract it again with "
                             f"--enc-type {enc_type} (extract_latents.py), or train from --data-path")
    if stored["enc_type"] != vae_identity(enc_type):
        raise LatentSetError(f"the latent set {root} holds features of --enc-type {stored['enc_type']}, this run "
                             f"asks for {enc_type}; pass --enc-type {stored['enc_type']} or extract them again")


class LatentDataset(torch.utils.data.Dataset):
    """Pre-extracted latents as ([C, h, w] float32, label); the key's flip bit picks the mirror image's latent.
    With `enc_type` (REPA), items are ((latent, features [grid * grid, dim] float32), label): the stored features
    of that encoder, of the same view. Shards are read lazily through safetensors' memory map, one open file per
    shard and worker."""

    def __init__(self, root, *, vae_name=None, image_size=None, enc_type=None):
        self.root = root
        self.manifest = read_manifest(root)
        check_latent_set(root, self.manifest, vae_name=vae_name, image_size=image_size)
        if enc_type is not None:
            check_stored_features(root, self.manifest, enc_type)
        self.features = self.manifest["features"] if enc_type is not None else None
        self.classes = self.manifest["classes"]
        self.shape = tuple(self.manifest["shape"])
        self.shard_files = [shard["file"] for shard in self.manifest["shards"]]
        self.shard_starts = np.cumsum([0] + [shard["count"] for shard in self.manifest["shards"]])
        self.labels = torch.cat([self.read_labels(shard["file"]) for shard in self.manifest["shards"]])
        self.files = {}

    def read(self, file, name):
        with safe_open(os.path.join(self.root, file), framework="pt") as handle:
            return handle.get_tensor(name)

    def read_labels(self, file):
        """A shard's labels, which must index the manifest's classes (the model's class table is that long)."""
        labels = self.read(file, "labels")
        low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
        if not 0 <= low <= high < max(len(self.classes), 1):
            raise LatentSetError(f"{os.path.join(self.root, file)} holds labels {low}..{high} "
                                 f"but {os.path.join(self.root, MANIFEST)} lists {len(self.classes)} classes; "
                                 f"{redo_hint(self.root)}")
        return labels

    def check_finite(self):
        """LatentSetError naming the first shard that holds a NaN or infinite latent (an fp16 encoder's overflow)."""
        for file in self.shard_files:
            if not torch.isfinite(self.read(file, "latents")).all():
                raise LatentSetError(f"{os.path.join(self.root, file)} holds NaN or infinite latents, which make the "
                                     f"loss NaN; {redo_hint(self.root)}")

    def __getstate__(self):  # open files stay behind when a DataLoader worker receives a copy
        return {**self.__dict__, "files": {}}

    def __len__(self):
        return int(self.shard_starts[-1])

    def __getitem__(self, key):
        index, flip = split_key(key)
        shard = int(np.searchsorted(self.shard_starts, index, side="right")) - 1
        file, row = self.shard_files[shard], index - int(self.shard_starts[shard])
        if file not in self.files:
            self.files[file] = safe_open(os.path.join(self.root, file), framework="pt")
        latent = self.files[file].get_slice("latents")[row: row + 1][0, int(flip)].float()
        if self.features is None:
            return latent, int(self.labels[index])
        features = self.files[file].get_slice("features")[row: row + 1][0, int(flip)].float()
        return (latent, features), int(self.labels[index])
