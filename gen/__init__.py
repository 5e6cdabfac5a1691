"""DiT and SiT transformers with Visual-Contrast Attention: models, diffusion, training, sampling."""
from .export import load_pretrained, save_pretrained

__all__ = ["load_pretrained", "save_pretrained"]
