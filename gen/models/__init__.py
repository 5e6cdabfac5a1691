"""Networks: the adaLN-Zero backbone with MHSA or VCA attention, its config, the model zoo, official checkpoints."""
from .attention import Attention
from .config import ModelConfig
from .convert import load_official_state_dict, read_state_dict
from .dit import DiT, SiT
from .vca import VisualContrastAttention, lambda_init_for_layer, set_vca_kernels
from .zoo import build_model, create_model, list_models, model_config

__all__ = [
    "Attention", "DiT", "ModelConfig", "SiT", "VisualContrastAttention", "build_model", "create_model",
    "lambda_init_for_layer", "list_models", "load_official_state_dict", "model_config", "read_state_dict",
    "set_vca_kernels",
]
