"""A DiT or SiT model of the vca-gen project (package `gen`) as a diffusers model: its config holds our
ModelConfig's fields, its weights are our model's under `model.`, saved by diffusers' save_pretrained.

Copied into the `transformer/` folder of a custom diffusers pipeline (gen.hub.diffusers_format); diffusers imports
it there when `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads the folder.
"""
try:
    from gen.models import build_model
    from gen.models.config import ModelConfig
except ImportError as error:
    raise ImportError(f"this diffusers folder holds a model of the vca-gen project, whose package `gen` cannot be "
                      f"imported here ({error}); install the project where you load the folder: `pip install "
                      f"path/to/the/project` (or `pip install -e .` in its checkout)") from error
from dataclasses import fields

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

M = ModelConfig  # the dataclass's class attributes are its defaults


class GenTransformer(ModelMixin, ConfigMixin):
    """Our DiT or SiT (`self.model`), built from ModelConfig's fields; called as the model is: (x, t, y)."""

    @register_to_config
    def __init__(self, family=M.family, input_size=M.input_size, patch_size=M.patch_size, in_channels=M.in_channels,
                 hidden_size=M.hidden_size, depth=M.depth, num_heads=M.num_heads, mlp_ratio=M.mlp_ratio,
                 class_dropout_prob=M.class_dropout_prob, num_classes=M.num_classes, learn_sigma=M.learn_sigma,
                 attention=M.attention, cfg_channels=M.cfg_channels, vca_pool_size=M.vca_pool_size,
                 vca_stage2_softmax=M.vca_stage2_softmax, vca_local_term=M.vca_local_term,
                 vca_contrast_tokens=M.vca_contrast_tokens, vca_shared_pos_embed=M.vca_shared_pos_embed,
                 qk_norm=M.qk_norm, rope=M.rope, swiglu=M.swiglu, rmsnorm=M.rmsnorm, repa_depth=M.repa_depth,
                 repa_dim=M.repa_dim, repa_projector_dim=M.repa_projector_dim):
        super().__init__()
        values = locals()
        self.model = build_model(ModelConfig(**{field.name: values[field.name] for field in fields(ModelConfig)}))

    @classmethod
    def from_model(cls, model):
        """A GenTransformer holding `model` itself (its weights, not a copy)."""
        with torch.device("meta"):  # the network built here is replaced at once: no memory, no initialisation
            transformer = cls(**model.config.to_dict())
        transformer.model = model
        return transformer

    def forward(self, x, t, y):
        return self.model(x, t, y)

    def forward_with_cfg(self, x, t, y, cfg_scale):
        return self.model.forward_with_cfg(x, t, y, cfg_scale=cfg_scale)
