"""Weights on disk and back: self-describing safetensors exports (export.py), and the one road from a weights
file to a ready sampler (loading.py: the model, its VAE and settings checked against the caller's, then the
sampler), used by sample.py, the pipeline, attention maps, the noise floor and the study.

    sampling = prepare_sampling("model.safetensors", "cuda", unset(SamplingSettings), pictures=True)
    sampling.weights.model, sampling.weights.vae, sampling.settings.cfg_scale, sampling.sample_fn
"""
from .export import load_pretrained, read_settings, save_pretrained
from .loading import Sampling, SamplingWeights, load_for_sampling, load_guide, prepare_sampling, ready_sampler

__all__ = ["Sampling", "SamplingWeights", "load_for_sampling", "load_guide", "load_pretrained", "prepare_sampling",
           "read_settings", "ready_sampler", "save_pretrained"]
