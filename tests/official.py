"""The fixtures' tiny official DiT/SiT networks, built with our code and holding the official weights."""
from pathlib import Path

from safetensors.torch import load_file

from gen.models import create_model, load_official_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
TINY = dict(input_size=8, hidden_size=64, depth=2, num_heads=4, num_classes=10, class_dropout_prob=0.1,
            learn_sigma=True)


def official_tensors() -> dict:
    return load_file(FIXTURES / "official_networks.safetensors")


def official_state_dict(family: str) -> dict:
    prefix = f"{family}.state_dict."
    return {k[len(prefix):]: v for k, v in official_tensors().items() if k.startswith(prefix)}


def tiny_official_model(family: str):
    """family: "dit" or "sit"."""
    model = create_model("DiT-S/2" if family == "dit" else "SiT-S/2", **TINY)
    return load_official_state_dict(model, official_state_dict(family)).eval()
