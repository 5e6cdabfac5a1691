"""DiT and SiT transformers with Visual-Contrast Attention: models, diffusion, training, sampling."""
