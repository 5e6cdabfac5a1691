"""Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"; RAE's FID 1.13): the
guided output is guide + scale * (model - guide), where the guide is a smaller or less trained model of the same
family, conditioned on the same class, instead of the model's own unconditional output.

    guided_model = Autoguided(model, load_guide("early.safetensors", model, device))   # gen.weights.loading

`Autoguided` is the model with its forward_with_cfg replaced, so every sampler, guidance interval and the one place
a batch is doubled (gen.sampling.guidance.guided) work unchanged: the second half of the doubled batch (the null
class) is not used.
"""
import torch
from torch import nn


class Autoguided(nn.Module):
    """`model` guided by `guide` on the channels classifier-free guidance guides (DiT's cfg_channels); the other
    channels (DiT's learned variance) are the model's own."""

    def __init__(self, model, guide):
        super().__init__()
        self.model, self.guide = model, guide
        self.config = model.config

    @property
    def name(self) -> str:
        return f"{self.model.name} guided by {self.guide.name}"

    def forward(self, x, t, y):
        return self.model(x, t, y)

    def forward_with_cfg(self, x, t, y, cfg_scale: float):
        half, t_half, y_half = x[: len(x) // 2], t[: len(x) // 2], y[: len(x) // 2]  # the rows with the classes
        out, guide_out = self.model(half, t_half, y_half), self.guide(half, t_half, y_half)
        split = self.config.cfg_channels if self.config.cfg_channels is not None else self.config.in_channels
        guided = guide_out[:, :split] + cfg_scale * (out[:, :split] - guide_out[:, :split])
        out = torch.cat([guided, out[:, split:]], dim=1)
        return torch.cat([out, out])
