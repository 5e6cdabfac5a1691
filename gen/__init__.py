"""DiT and SiT transformers with Visual-Contrast Attention: models, diffusion, training, sampling."""
from .pipeline import GenerationPipeline
from .training.entry import train_model
from .weights import load_pretrained, save_pretrained

__all__ = ["GenerationPipeline", "load_pretrained", "save_pretrained", "train_model"]
