"""DiT and SiT transformers with Visual-Contrast Attention: models, diffusion, training, sampling."""
from .export import load_pretrained, save_pretrained
from .pipeline import GenerationPipeline
from .training.entry import train_model

__all__ = ["GenerationPipeline", "load_pretrained", "save_pretrained", "train_model"]
