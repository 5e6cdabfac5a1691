"""Feature networks: the batching every network shares, and torch-fidelity's TF-compatible Inception v3
("inception-v3-compat"; the digits network is in digits_network.py).

Per image Inception gives the 2048 pool features (FID, precision/recall, KID), the 1008 logits without the fc
bias (ADM's IS graph multiplies by the fc weights only, torch-fidelity's 'logits_unbiased') and ADM's
spatial features for sFID. Those are `mixed_6/conv` of the TF graph: the 17x17 blocks mixed_3..mixed_7 are
torch-fidelity's Mixed_6a..Mixed_6e, so mixed_6 is Mixed_6d, and its first op `conv` is the 1x1 branch
`Mixed_6d.branch1x1` (conv + batchnorm + ReLU, the first 192 channels of Mixed_6d's output). ADM keeps its
first 7 channels in TF's channels-last order: [17, 17, 7] flattened to 2023 values.
"""

import numpy as np
import torch
import torch_fidelity
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from tqdm import tqdm

from common.files import sha256_of_file

from .errors import FIDError
from .weights import load_inception_state_dict, resolve_inception_weights

POOL_DIM, LOGITS_DIM, SPATIAL_DIM = 2048, 1008, 7 * 17 * 17
EXTRACTOR_NAME = "inception-v3-compat"


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device=None):
    """The torch device to run on (default: cuda when available); one that is not there is an FIDError."""
    if device is None:
        return torch.device(default_device())
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise FIDError(f"--device {device} is not a device name; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise FIDError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU; use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise FIDError(f"--device {device}: torch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif resolved.type != "cpu":
        raise FIDError(f"--device {device}: the FID pipeline runs on cpu or cuda")
    return resolved


def tf32_settings(device):
    """Whether Inception's convolutions and matmuls may use TF32 (CUDA only): it moves features slightly."""
    on_cuda = device.type == "cuda"
    return {"tf32_convolutions": on_cuda and torch.backends.cudnn.allow_tf32,
            "tf32_matmul": on_cuda and torch.backends.cuda.matmul.allow_tf32}


class FeatureNetwork:
    """Batched feature extraction with a progress bar, shared by every network; build once and reuse.

    A subclass sets `name` (its `--features` value), `feature_dims` ({"pool", "spatial"} sizes), `num_classes`
    (None unless its logits are the samples' class ids) and `device`, `weights_path`, `weights_sha256`, and
    gives `batch(images)` -> (pool, logits, spatial) on its device (no copy to the host: no sync per batch) and
    `description()`.
    """

    def __call__(self, source, batch_size=200, num_workers=0, progress=True, desc="features", keep=None):
        """Features of every image of a source (see images.py) as float32 numpy arrays in a dict.

        `keep`: sorted indices of images to return as well (under "images"), e.g. the reference subset.
        """
        on_device, on_host, kept = [], [], []
        keep = None if keep is None else np.asarray(keep)
        start = 0
        with tqdm(total=len(source), unit="img", desc=desc, disable=not progress) as bar:
            for images in source.batches(batch_size, num_workers):
                on_device.append(self.batch(images))
                if keep is not None:
                    chosen = keep[(keep >= start) & (keep < start + len(images))] - start
                    kept.append(np.array(images[chosen]))
                start += len(images)
                bar.update(len(images))
                if len(on_device) * batch_size >= HOST_COPY_IMAGES:
                    on_host.append(to_host(on_device))
                    on_device = []
        if on_device:
            on_host.append(to_host(on_device))
        features = {name: torch.cat([part[index] for part in on_host]).numpy()
                    for index, name in enumerate(("pool", "logits", "spatial"))}
        if keep is not None:
            features["images"] = np.concatenate(kept)
        return features

    def device_images(self, images):
        """A uint8 batch as a tensor on the device; from pinned memory on a GPU, so the copy does not wait for
        the batches before it and the next batch is read while this one runs."""
        images = torch.as_tensor(np.asarray(images))
        if self.device.type == "cuda":
            images = images.pin_memory()
        return images.to(self.device, non_blocking=True)


# Batch outputs stay on the device for this many images, then go to the host in one copy: a copy per batch
# would make the host wait for every batch (a sync), and all on the device would hold 1 GB for 50K images.
HOST_COPY_IMAGES = 10000


def to_host(outputs):
    """[(pool, logits, spatial) per batch] on the device -> (pool, logits, spatial) float32 CPU tensors."""
    return tuple(torch.cat(parts).float().cpu() for parts in zip(*outputs, strict=True))


class InceptionFeatures(FeatureNetwork):
    """torch-fidelity's Inception: build once and reuse (e.g. inside training)."""

    name = "inception"
    feature_dims = {"pool": POOL_DIM, "spatial": SPATIAL_DIM}
    num_classes = None  # its 1008 TF classes are not the samples' label ids: no class accuracy

    def __init__(self, weights=None, device=None):
        self.device = resolve_device(device)  # before the weights, which may be a download
        self.weights_path = resolve_inception_weights(weights)
        load_inception_state_dict(self.weights_path)  # validated without executing code before torch-fidelity
        self.weights_sha256 = sha256_of_file(self.weights_path)
        self.network = tf_inception.FeatureExtractorInceptionV3(
            EXTRACTOR_NAME, ["2048", "logits_unbiased"], feature_extractor_weights_path=self.weights_path)
        self.network.to(self.device)
        self.spatial = None
        self.network.Mixed_6d.branch1x1.register_forward_hook(self.keep_spatial)

    def keep_spatial(self, module, inputs, output):
        # NCHW -> NHWC before flattening, to match the order of ADM's TF features (and their mu_s, sigma_s).
        self.spatial = output[:, :7].permute(0, 2, 3, 1).flatten(1).float()

    def description(self):
        return (f"torch-fidelity {torch_fidelity.__version__} {EXTRACTOR_NAME}: pool 2048, "
                f"logits_unbiased 1008, spatial Mixed_6d.branch1x1[:7] (ADM mixed_6/conv) 2023")

    @torch.no_grad()
    def batch(self, images):
        """Features of one uint8 batch [B, H, W, 3]: (pool, logits, spatial) float32 tensors on the device."""
        pool, logits = self.network(self.device_images(images).permute(0, 3, 1, 2))
        return pool.float(), logits.float(), self.spatial
