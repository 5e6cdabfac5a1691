"""Stand-in Inception weights: torch-fidelity's network with seeded random weights, for tests and benchmarks on
machines that cannot download the real file (their numbers are not FID, but every code path is the real one)."""
from unittest import mock

import torch
from torch_fidelity import feature_extractor_inceptionv3 as tf_inception


def random_inception_network(seed=0):
    """torch-fidelity's Inception with seeded random weights, for tests and benchmarks (no download)."""
    torch.manual_seed(seed)
    # torch-fidelity's constructor always loads weights; skip that step to keep the fresh initialisation.
    extractor_class = tf_inception.FeatureExtractorInceptionV3
    with mock.patch.object(extractor_class, "load_state_dict", lambda self, state_dict: None), \
            mock.patch.object(tf_inception, "load_state_dict_from_url", lambda *args, **kwargs: {}):
        network = extractor_class("inception-v3-compat", ["2048"])
    for module in network.modules():
        # He init keeps activations at unit scale through 90 layers; PyTorch's default shrinks them to ~1e-8.
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=module.in_features ** -0.5)
    return network


def save_random_inception_weights(path, seed=0):
    """Write a seeded random Inception state_dict to `path`, loadable through --inception-weights."""
    torch.save(random_inception_network(seed).state_dict(), path)
    return path
