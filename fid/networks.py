"""The feature networks by their `--features` name, and the one way to build one."""

from .digits_network import DigitsFeatures
from .errors import FIDError
from .features import InceptionFeatures

FEATURE_NETWORKS = {"inception": InceptionFeatures, "digits": DigitsFeatures}


def feature_network(features):
    """The class of a feature network by name: its `name`, `feature_dims` and `num_classes`, before building."""
    if features not in FEATURE_NETWORKS:
        raise FIDError(f"unknown feature network {features!r}; choose one of {sorted(FEATURE_NETWORKS)}")
    return FEATURE_NETWORKS[features]


def build_extractor(features="inception", inception_weights=None, device=None, cache_dir=None):
    """Inception (weights: a path, else found or downloaded) or the digits network (cached, else trained)."""
    feature_network(features)
    if features == "inception":
        return InceptionFeatures(inception_weights, device)
    if inception_weights:
        raise FIDError(f"--inception-weights is for --features inception, not --features {features}")
    return DigitsFeatures(device, cache_dir)
