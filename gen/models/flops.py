"""Forward FLOPs of one image through a network, counted by torch's FlopCounterMode: what training budgets
(gen/training/budget.py) and the MFU column of benchmarks/train_step.py multiply by images and by 3."""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig
from .zoo import build_model


def forward_flops_per_image(config: ModelConfig) -> int:
    """Forward FLOPs of one image of `config`, counted on the meta device (no memory, no time) with attention
    decomposed into matmuls, so MHSA and VCA are counted by the same rule."""
    with torch.device("meta"):
        model = build_model(config)
        x = torch.randn(1, config.in_channels, config.input_size, config.input_size)
        t, y = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    return counter.get_total_flops()
