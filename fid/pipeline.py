"""`compute_metrics`: samples + reference -> every metric, for the command line and for library callers."""

import contextlib
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy
import torch
import torch_fidelity
from PIL import Image

from .cache import cache_path, default_cache_dir, read_cached_features, write_cached_features
from .errors import FIDError
from .features import resolve_device, tf32_settings
from .images import NpzImages, npz_labels, open_images
from .manifold import DISTANCE_PRECISIONS, precision_recall
from .metrics import (
    IS_SPLIT_RULES,
    class_accuracy,
    feature_statistics,
    frechet_distance,
    inception_score,
    inception_score_splits,
    kernel_inception_distance,
)
from .networks import build_extractor, feature_network
from .reference import Reference, load_reference

NEAREST_NEIGHBOURS = 3


def fid_label(num_samples, network="inception"):
    """Papers' name for the number: FID-50K only when it is one (on Inception); other networks' FID says so."""
    if network != "inception":
        return f"{network} FID (N={num_samples})"
    return "FID-50K" if num_samples == 50000 else f"FID (N={num_samples})"


def check_counts(samples_name, num_samples, reference):
    """Too few images for a metric fails here, before any Inception pass, naming the metric and its need."""
    if num_samples < 2:
        raise FIDError(f"{samples_name}: FID needs at least 2 samples for a covariance, got {num_samples}")
    if reference.images is None:
        return
    num_reference = len(reference.images)
    if reference.mu is None and num_reference < 2:
        raise FIDError(f"reference {reference.path}: statistics from arr_0 need at least 2 images, got "
                       f"{num_reference}; add images or mu/sigma")
    for name, count in ((samples_name, num_samples), (f"reference {reference.path} arr_0", num_reference)):
        if count <= NEAREST_NEIGHBOURS:
            raise FIDError(f"{name}: precision/recall (k={NEAREST_NEIGHBOURS}) need at least "
                           f"{NEAREST_NEIGHBOURS + 1} images, got {count}")


def image_size(source):
    """(height, width) of a source's images: from the array's shape, else the first file's header (or None)."""
    if hasattr(source, "shape"):
        return tuple(source.shape[1:3])
    try:
        with Image.open(source.files[0]) as image:
            return image.size[::-1]
    except OSError:  # an unreadable file is named when the features are read
        return None


def check_sizes(samples_name, source, reference):
    """A warning, not an error, as ADM's evaluator accepts any sizes (Inception resizes both to 299); but samples
    of another size than the reference images mostly mean a wrong --ref."""
    if reference.images is None:
        return  # statistics alone do not say the images' size
    sample_size, reference_size = image_size(source), image_size(reference.images)
    if None not in (sample_size, reference_size) and sample_size != reference_size:
        warnings.warn(f"{samples_name} holds {sample_size[1]}x{sample_size[0]} images but reference "
                      f"{reference.path} {reference_size[1]}x{reference_size[0]} ones; the feature network resizes "
                      f"both, but check --ref (fid ref --image-size makes one of your size)", stacklevel=2)


def check_options(is_split_rule, distance_precision):
    if is_split_rule not in IS_SPLIT_RULES:
        raise FIDError(f"unknown Inception Score split rule {is_split_rule!r}; choose {sorted(IS_SPLIT_RULES)}")
    if distance_precision not in DISTANCE_PRECISIONS:
        raise FIDError(f"unknown precision/recall distance precision {distance_precision!r}; choose "
                       f"{sorted(DISTANCE_PRECISIONS)}")


def compute_metrics(samples, ref, inception_weights=None, device=None, batch_size=200, num_workers=None,
                    progress=True, extractor=None, kid=True, is_split_rule="adm",
                    distance_precision="float16-first", cache_dir=None, features="inception", labels=None):
    """Score samples (uint8 [N, H, W, 3] array, `.npz` or image folder) against a reference (path or
    Reference). Returns a dict of metrics (None where the reference lacks what one needs) and provenance.

    `features`: the network, "inception" or "digits" (fid.digits), unless a built `extractor` is given.
    Inside training, pass a built `extractor=InceptionFeatures(...)` (or `DigitsFeatures(...)`) and a loaded
    `ref=load_reference(...)` so the network and the reference images' features are made once. The
    reference images' features are also cached on disk under `cache_dir` (default: fid.cache.default_cache_dir).
    A network of the samples' classes (digits) also gives the class accuracy against `labels` (default: arr_1
    of an `.npz`).
    """
    started = time.perf_counter()
    samples_name = os.fspath(samples) if isinstance(samples, str | os.PathLike) else "<array>"
    num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    check_options(is_split_rule, distance_precision)
    network = extractor or feature_network(features)  # its name and sizes, before building it
    device = extractor.device if extractor else resolve_device(device)  # before hashing a large reference
    source = open_images(samples, name="samples")
    reference = ref if isinstance(ref, Reference) else load_reference(ref, network.name)
    check_counts(samples_name, len(source), reference)
    check_sizes(samples_name, source, reference)
    labels = sample_labels(samples_name, source, labels, network.num_classes)
    extractor = extractor or build_extractor(features, inception_weights, device, cache_dir)
    timings = {}
    with stage_timer(timings, "features_samples"):
        sample_features = extractor(source, batch_size, num_workers, progress, desc="samples")
    ref_features = reference_image_features(reference, extractor, cache_dir or default_cache_dir(), batch_size,
                                            num_workers, progress, timings)
    try:
        result = scores(sample_features, labels, reference, ref_features, extractor, kid, is_split_rule,
                        distance_precision, timings)
    except ValueError as error:  # broken statistics for a metric: one line, not a traceback
        raise FIDError(f"cannot score {samples_name} against {reference.path}: {error}") from None
    timings["total"] = round(time.perf_counter() - started, 3)
    result.update(
        samples=samples_name, reference=reference.path, reference_sha256=reference.sha256,
        reference_num_images=0 if reference.images is None else len(reference.images),
        reference_statistics=reference.statistics_source(), feature_network=extractor.name,
        feature_extractor=extractor.description(), feature_weights=os.path.abspath(extractor.weights_path),
        feature_weights_sha256=extractor.weights_sha256, device=str(extractor.device),
        **tf32_settings(extractor.device), versions=library_versions(),
        seconds=round(timings["total"], 2), timings=timings, **sampling_record(samples))
    return result


def sampling_record(samples) -> dict:
    """What sample.py recorded beside a samples file (its folder's sample_settings.json): the precision the
    images were made in, and every setting, so the report says how its samples were made; None elsewhere."""
    folder = os.path.dirname(os.fspath(samples)) if isinstance(samples, str | os.PathLike) else None
    path = None if folder is None else os.path.join(folder, "sample_settings.json")
    try:
        with open(path) as handle:
            settings = json.load(handle)
    except (TypeError, OSError, ValueError):  # no path, no file, or not JSON: nothing to report
        return {"sampling_precision": None, "sample_settings": None}
    return {"sampling_precision": settings.get("precision"), "sample_settings": settings}


@contextlib.contextmanager
def stage_timer(timings, name):
    """Sets timings[name] to the seconds the block takes. The stages are fid.report's TIMING_ROWS; FID and sFID
    run concurrently, so stage times can overlap and need not add up to the total."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - started, 3)


def library_versions():
    """The libraries whose kernels the numbers depend on (scipy's sqrtm changed in 1.16)."""
    return {"torch": torch.__version__, "torch-fidelity": torch_fidelity.__version__, "scipy": scipy.__version__,
            "numpy": np.__version__}


def sample_labels(samples_name, source, labels, num_classes):
    """The samples' class ids (`labels`, else arr_1 of their `.npz`) when the network classifies them, else None."""
    if num_classes is None:
        return None
    if labels is None and isinstance(source, NpzImages):
        try:
            labels = npz_labels(source.path)
        except Exception as error:  # pickled objects, a truncated member: one line, as for arr_0
            raise FIDError(f"{samples_name}: cannot read the labels arr_1 ({type(error).__name__}: {error})") from None
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (len(source),) or labels.dtype.kind not in "iu" or not np.isin(labels, range(num_classes)).all():
        values = f" from {labels.min()} to {labels.max()}" if labels.size and labels.dtype.kind in "iuf" else ""
        raise FIDError(f"{samples_name}: labels (arr_1) must be {len(source)} class ids in 0..{num_classes - 1}, "
                       f"got {labels.dtype} {list(labels.shape)}{values}")
    return labels


def reference_image_features(reference, extractor, cache_dir, batch_size, num_workers, progress, timings=None):
    """Pool and spatial features of the reference images: from memory, the disk cache, or one network pass.

    `timings["features_reference"]`: the seconds of the network pass, "cached" without one, None without images.
    """
    timings = {} if timings is None else timings
    timings["features_reference"] = None if reference.images is None else "cached"
    if reference.images is None:
        return None
    if extractor.weights_sha256 not in reference.image_features:
        path = cache_path(cache_dir, reference.sha256, extractor.name, extractor.weights_sha256)
        features = read_cached_features(path, len(reference.images), extractor.feature_dims)
        if features is None:
            with stage_timer(timings, "features_reference"):
                features = extractor(reference.images, batch_size, num_workers, progress, desc="reference images")
            write_cached_features(path, features)
        reference.image_features[extractor.weights_sha256] = features
    return reference.image_features[extractor.weights_sha256]


def reference_statistics(reference, ref_features):
    """(mu, sigma, mu_s, sigma_s): the file's, else computed from its images' features as ADM does."""
    if reference.mu is not None:
        return reference.mu, reference.sigma, reference.mu_s, reference.sigma_s
    return (*feature_statistics(ref_features["pool"]), *feature_statistics(ref_features["spatial"]))


def scores(features, labels, reference, ref_features, extractor, kid, is_split_rule, distance_precision,
           timings=None):
    """Every metric of the sample features (and labels) against the reference; None where data are lacking.
    Puts the seconds of each stage in `timings` (None: a stage that did not run)."""
    timings = {} if timings is None else timings
    num_samples, device = len(features["pool"]), extractor.device
    with stage_timer(timings, "statistics"):
        mu_ref, sigma_ref, mu_s_ref, sigma_s_ref = reference_statistics(reference, ref_features)
        pool_statistics = feature_statistics(features["pool"])
        spatial_statistics = None if mu_s_ref is None else feature_statistics(features["spatial"])
    result = {"fid_label": fid_label(num_samples, extractor.name), "num_samples": num_samples}
    result["fid"], result["sfid"] = frechet_distances(pool_statistics, (mu_ref, sigma_ref), spatial_statistics,
                                                      (mu_s_ref, sigma_s_ref), timings)
    with stage_timer(timings, "inception_score"):
        result["inception_score"], result["inception_score_std"] = inception_score(features["logits"], is_split_rule)
        result["inception_score_splits"] = len(inception_score_splits(torch.zeros(num_samples), is_split_rule))
    result.update(inception_score_split_rule=IS_SPLIT_RULES[is_split_rule], precision=None, recall=None,
                  precision_recall_distances=DISTANCE_PRECISIONS[distance_precision], kid=None, kid_std=None)
    timings.update(precision_recall=None, kid=None, class_accuracy=None)
    if ref_features is not None:
        ref_pool, pool = ref_features["pool"], features["pool"]
        with stage_timer(timings, "precision_recall"):
            result["precision"], result["recall"] = precision_recall(ref_pool, pool, NEAREST_NEIGHBOURS, device,
                                                                     distance_precision)
        if kid:
            with stage_timer(timings, "kid"):
                result["kid"], result["kid_std"] = kernel_inception_distance(ref_pool, pool)
    result["class_accuracy"], result["class_accuracy_per_class"] = None, None
    if labels is not None:
        with stage_timer(timings, "class_accuracy"):
            result["class_accuracy"], result["class_accuracy_per_class"] = class_accuracy(features["logits"], labels)
    return result


# FID's and sFID's matrix square roots run in two threads from this many CPU cores: scipy's sqrtm releases the
# GIL and its Schur step uses many cores poorly, but on 2 cores BLAS already keeps both busy and threads slow it.
CONCURRENT_SQRTM_CORES = 4


def frechet_distances(pool_statistics, ref_statistics, spatial_statistics, ref_spatial_statistics, timings):
    """(FID, sFID or None); each thread computes exactly what it would alone, so the numbers do not change."""
    def timed(name, statistics, ref):
        with stage_timer(timings, name):
            return frechet_distance(*statistics, *ref)

    timings.update(fid=None, sfid=None)  # this order in the report, whichever thread ends first
    if spatial_statistics is None:
        return timed("fid", pool_statistics, ref_statistics), None
    if available_cores() < CONCURRENT_SQRTM_CORES:
        return timed("fid", pool_statistics, ref_statistics), timed("sfid", spatial_statistics, ref_spatial_statistics)
    with ThreadPoolExecutor(2) as pool:
        fid = pool.submit(timed, "fid", pool_statistics, ref_statistics)
        sfid = pool.submit(timed, "sfid", spatial_statistics, ref_spatial_statistics)
        return fid.result(), sfid.result()


def available_cores():
    """CPU cores this process may run on (its affinity where the platform says, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
