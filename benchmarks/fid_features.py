"""Inception feature-extraction throughput (images/s) of the FID pipeline at a few batch sizes.

    python benchmarks/fid_features.py                      # seeded random weights, nothing downloaded
    python benchmarks/fid_features.py --inception-weights pt_inception-2015-12-05-6726825d.pth

Images are random uint8 at --image-size (256: what the sampler writes); each batch goes through the same
TF-compatible resize to 299x299 and the full network (pool, logits and sFID's spatial features). Each row is
printed as it is measured; a batch size that fails says why in its row.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import StreamTable, device_name, one_line, release  # noqa: E402

from fid.features import InceptionFeatures, default_device  # noqa: E402
from fid.images import ArrayImages  # noqa: E402
from fid.random_weights import save_random_inception_weights  # noqa: E402


def measure(extractor, images, batch_size):
    """Seconds for all images after a small warm-up batch (allocator, kernel loading, first-call costs)."""
    extractor.batch(images[:min(batch_size, 8)])
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    extractor(ArrayImages(images), batch_size=batch_size, progress=False)
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inception-weights", default=None, help="real weights (default: random, seed 0)")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="default: 50 200 500 on a GPU, 4 16 on a CPU")
    parser.add_argument("--num-images", type=int, default=None, help="default: 2000 on a GPU, 16 on a CPU")
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args(argv)
    device = torch.device(args.device or default_device())
    gpu = device.type == "cuda"
    batch_sizes = args.batch_sizes or ([50, 200, 500] if gpu else [4, 16])
    num_images = args.num_images or (2000 if gpu else 16)
    images = np.random.default_rng(0).integers(0, 256, (num_images, args.image_size, args.image_size, 3),
                                               dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        weights = args.inception_weights or save_random_inception_weights(os.path.join(folder, "random.pth"))
        extractor = InceptionFeatures(weights, device)
        weights_name = weights if args.inception_weights else "random (seed 0)"
        size = f"{args.image_size}x{args.image_size}"
        print(f"device: {device_name(device)}; weights: {weights_name}; images: {size} uint8", flush=True)
        table = StreamTable("Inception features (FID)", ["batch size", "images", "seconds", "images/s", "note"])
        for batch_size in batch_sizes:
            try:
                seconds = measure(extractor, images, batch_size)
                table.row([batch_size, num_images, f"{seconds:.2f}", f"{num_images / seconds:.1f}", ""])
            except Exception as error:  # say why in the row, then the next batch size
                table.failed([batch_size, num_images], one_line(error))
            release(device)


if __name__ == "__main__":
    main()
