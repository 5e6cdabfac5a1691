"""The exponential moving average of the weights that DiT and SiT sample from."""
import copy

import torch


def create_ema(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of `model` in eval mode, equal to it (DiT's `update_ema(ema, model, decay=0)`)."""
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    update_ema(ema, model, decay=0.0)
    return ema


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float = 0.9999):
    """ema <- decay * ema + (1 - decay) * model over all parameters, in two fused foreach kernels."""
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    torch._foreach_mul_(ema_params, decay)
    torch._foreach_add_(ema_params, model_params, alpha=1.0 - decay)
