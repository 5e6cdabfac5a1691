"""`compute_metrics`: samples + reference -> every metric, as the command line and training loops use it."""

import os
import time

from .errors import FIDError
from .features import InceptionFeatures
from .images import open_images
from .manifold import precision_recall
from .metrics import feature_statistics, frechet_distance, inception_score, kernel_inception_distance
from .reference import Reference, load_reference

NEAREST_NEIGHBOURS = 3
IS_SPLITS = 10


def fid_label(num_samples):
    """Papers' name for the number: FID-50K only when it is one."""
    return "FID-50K" if num_samples == 50000 else f"FID (N={num_samples})"


def compute_metrics(samples, ref, inception_weights=None, device=None, batch_size=200, num_workers=None,
                    progress=True, extractor=None, kid=True):
    """Score samples (uint8 [N, H, W, 3] array, `.npz` or image folder) against a reference (path or
    Reference). Returns a dict of metrics (None where the reference lacks what one needs) and provenance.

    Inside training, pass a built `extractor=InceptionFeatures(...)` and a loaded `ref=load_reference(...)`
    so the network and the reference images' features are made once.
    """
    started = time.perf_counter()
    samples_name = os.fspath(samples) if isinstance(samples, str | os.PathLike) else "<array>"
    num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    source = open_images(samples, name="samples")
    if len(source) < 2:
        raise FIDError(f"{samples_name}: need at least 2 samples for a covariance, got {len(source)}")
    reference = ref if isinstance(ref, Reference) else load_reference(ref)
    extractor = extractor or InceptionFeatures(inception_weights, device)
    features = extractor(source, batch_size, num_workers, progress, desc="samples")
    ref_pool = reference_image_features(reference, extractor, batch_size, num_workers, progress)
    try:
        result = scores(features, reference, ref_pool, extractor.device, kid)
    except FIDError:
        raise
    except ValueError as error:  # too few points or broken statistics for a metric: one line, not a traceback
        raise FIDError(f"cannot score {samples_name} against {reference.path}: {error}") from None
    result.update(
        samples=samples_name, reference=reference.path, reference_sha256=reference.sha256,
        reference_num_images=0 if reference.images is None else len(reference.images),
        feature_extractor=extractor.description(), inception_weights=os.path.abspath(extractor.weights_path),
        inception_weights_sha256=extractor.weights_sha256, device=str(extractor.device),
        seconds=round(time.perf_counter() - started, 2))
    return result


def reference_image_features(reference, extractor, batch_size, num_workers, progress):
    """Pool features of the reference images (ADM recomputes them too), cached on the Reference."""
    if reference.images is None:
        return None
    if extractor.weights_sha256 not in reference.image_features:
        features = extractor(reference.images, batch_size, num_workers, progress, desc="reference images")
        reference.image_features[extractor.weights_sha256] = features["pool"]
    return reference.image_features[extractor.weights_sha256]


def scores(features, reference, ref_pool, device, kid=True):
    """Every metric of the sample features against the reference; None where the reference lacks data."""
    num_samples = len(features["pool"])
    mu, sigma = feature_statistics(features["pool"])
    result = {"fid_label": fid_label(num_samples), "num_samples": num_samples,
              "fid": frechet_distance(mu, sigma, reference.mu, reference.sigma), "sfid": None}
    if reference.mu_s is not None:
        mu_s, sigma_s = feature_statistics(features["spatial"])
        result["sfid"] = frechet_distance(mu_s, sigma_s, reference.mu_s, reference.sigma_s)
    result["inception_score"], result["inception_score_std"] = inception_score(features["logits"], IS_SPLITS)
    result.update(precision=None, recall=None, kid=None, kid_std=None)
    if ref_pool is not None:
        pool = features["pool"]
        result["precision"], result["recall"] = precision_recall(ref_pool, pool, NEAREST_NEIGHBOURS, device)
        if kid:
            result["kid"], result["kid_std"] = kernel_inception_distance(ref_pool, pool, device=device)
    return result
