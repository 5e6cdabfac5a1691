"""FID's and sFID's Frechet distances (scipy's sqrtm) one after the other vs in two threads, as fid.pipeline runs
them from fid.pipeline.CONCURRENT_SQRTM_CORES cores on; the numbers must be identical bit for bit.

    python benchmarks/fid_frechet.py                     # 1000 random features against 1000 (a singular case)
    python benchmarks/fid_frechet.py --num-features 5000

The statistics are of random non-negative features of Inception's sizes (pool 2048, spatial 2023): fewer
features than dimensions makes singular covariances, whose product may take ADM's retry (a second sqrtm).
"""

import argparse
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import StreamTable  # noqa: E402

from fid.features import POOL_DIM, SPATIAL_DIM  # noqa: E402
from fid.metrics import feature_statistics, frechet_distance  # noqa: E402
from fid.pipeline import available_cores  # noqa: E402


def statistics(rng, num_features, dim):
    """Mean and covariance of correlated non-negative features, like Inception's after its ReLUs."""
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return feature_statistics(np.abs(rng.standard_normal((num_features, dim)) @ mixing + 0.3))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-features", type=int, default=1000, help="features per set (default 1000)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    pairs = [[*statistics(rng, args.num_features, dim), *statistics(rng, args.num_features, dim)]
             for dim in (POOL_DIM, SPATIAL_DIM)]
    print(f"{available_cores()} cores; {args.num_features} features per set", flush=True)
    table = StreamTable("Frechet distances (FID 2048, sFID 2023)", ["how", "seconds", "FID", "sFID"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        alone = [frechet_distance(*pair) for pair in pairs]
        table.row(["one after the other", f"{time.perf_counter() - started:.2f}", *map(repr, alone)])
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            threaded = list(pool.map(lambda pair: frechet_distance(*pair), pairs))
        table.row(["two threads", f"{time.perf_counter() - started:.2f}", *map(repr, threaded)])
    retries = sum("singular covariance product" in str(warning.message) for warning in caught)
    print(f"identical: {threaded == alone}; ADM retries (per run of both): {retries // 2}")


if __name__ == "__main__":
    main()
