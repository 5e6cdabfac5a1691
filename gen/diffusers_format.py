"""MHSA DiT models in diffusers' layout (`DiTTransformer2DModel`), so that diffusers' `DiTPipeline` runs them,
and back.

    save_diffusers(model, "out/transformer")          # config.json + diffusion_pytorch_model.safetensors
    model = load_diffusers("out/transformer")          # our DiT again

diffusers keeps a copy of the timestep and class embedders in every block (the shared ones are copied in) and
splits the qkv projection. One convention differs and is not ours to change: diffusers' timestep frequencies
divide by (half - 1) where DiT divides by half (`downscale_freq_shift=1`), so its outputs differ slightly from
DiT's; with the shift set to 0 they agree to float rounding (tests/test_diffusers_format.py).
"""
import torch

from .errors import InvalidValue
from .models import create_model
from .models.config import SIZES


def diffusers_config(config) -> dict:
    if config.attention != "mhsa" or config.family != "DiT":
        raise InvalidValue(f"diffusers' DiTTransformer2DModel holds MHSA DiT models; {config.name} is not one")
    return dict(num_attention_heads=config.num_heads, attention_head_dim=config.hidden_size // config.num_heads,
                in_channels=config.in_channels, out_channels=config.in_channels * (2 if config.learn_sigma else 1),
                num_layers=config.depth, sample_size=config.input_size, patch_size=config.patch_size,
                num_embeds_ada_norm=config.num_classes, attention_bias=True, activation_fn="gelu-approximate",
                norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-6)


def block_key_pairs(index: int):
    """(diffusers key, our key) of one transformer block, without the embedders and the qkv split."""
    ours, theirs = f"blocks.{index}.", f"transformer_blocks.{index}."
    return [(theirs + "norm1.linear", ours + "adaLN_modulation.1"), (theirs + "attn1.to_out.0", ours + "attn.proj"),
            (theirs + "ff.net.0.proj", ours + "mlp.fc1"), (theirs + "ff.net.2", ours + "mlp.fc2")]


EMBEDDER_PAIRS = [("timestep_embedder.linear_1", "t_embedder.mlp.0"),
                  ("timestep_embedder.linear_2", "t_embedder.mlp.2")]
TOP_PAIRS = [("pos_embed.proj", "x_embedder.proj"), ("proj_out_1", "final_layer.adaLN_modulation.1"),
             ("proj_out_2", "final_layer.linear")]


def key_pairs(depth: int) -> list[tuple[str, str]]:
    """(diffusers prefix, our prefix) of every weight and bias but the embedders and the qkv projection."""
    return TOP_PAIRS + [pair for index in range(depth) for pair in block_key_pairs(index)]


def renamed(state: dict, pairs) -> dict:
    """The weights and biases of `state` under new prefixes: pairs of (old prefix, new prefix)."""
    return {new + suffix: state[old + suffix] for old, new in pairs for suffix in (".weight", ".bias")}


def to_diffusers_state_dict(state: dict, depth: int) -> dict:
    out = renamed(state, [(ours, theirs) for theirs, ours in key_pairs(depth)])
    for index in range(depth):
        emb = f"transformer_blocks.{index}.norm1.emb."  # each block holds a copy of the shared embedders
        out.update(renamed(state, [(ours, emb + theirs) for theirs, ours in EMBEDDER_PAIRS]))
        out[emb + "class_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"]
        for part in ("weight", "bias"):
            for letter, value in zip("qkv", state[f"blocks.{index}.attn.qkv.{part}"].chunk(3), strict=True):
                out[f"transformer_blocks.{index}.attn1.to_{letter}.{part}"] = value
    return {key: value.clone() for key, value in out.items()}


def from_diffusers_state_dict(state: dict, depth: int) -> dict:
    emb = "transformer_blocks.0.norm1.emb."  # every block holds the same embedders
    out = renamed(state, key_pairs(depth) + [(emb + theirs, ours) for theirs, ours in EMBEDDER_PAIRS])
    out["y_embedder.embedding_table.weight"] = state[emb + "class_embedder.embedding_table.weight"]
    for index in range(depth):
        for part in ("weight", "bias"):
            parts = [state[f"transformer_blocks.{index}.attn1.to_{letter}.{part}"] for letter in "qkv"]
            out[f"blocks.{index}.attn.qkv.{part}"] = torch.cat(parts)
    return out


def to_diffusers(model):
    """A DiTTransformer2DModel with `model`'s weights (an MHSA DiT)."""
    from diffusers import DiTTransformer2DModel

    transformer = DiTTransformer2DModel(**diffusers_config(model.config))
    state = to_diffusers_state_dict(model.state_dict(), model.config.depth)
    missing, unexpected = transformer.load_state_dict(state, strict=False)
    if unexpected or any(not key.endswith("pos_embed.pos_embed") for key in missing):
        raise RuntimeError(f"diffusers layout mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return transformer.eval()


def save_diffusers(model, folder) -> str:
    to_diffusers(model).save_pretrained(folder)
    return str(folder)


def load_diffusers(source):
    """Our DiT from a DiTTransformer2DModel or its folder."""
    from diffusers import DiTTransformer2DModel

    transformer = source if isinstance(source, DiTTransformer2DModel) else DiTTransformer2DModel.from_pretrained(source)
    c = transformer.config
    hidden_size = c.num_attention_heads * c.attention_head_dim
    architecture = dict(depth=c.num_layers, hidden_size=hidden_size, num_heads=c.num_attention_heads)
    size = next((name for name, values in SIZES.items() if values == architecture), "XL")
    model = create_model(f"DiT-{size}/{c.patch_size}", **architecture, input_size=c.sample_size,
                         in_channels=c.in_channels, num_classes=c.num_embeds_ada_norm,
                         learn_sigma=c.out_channels == 2 * c.in_channels)
    missing, unexpected = model.load_state_dict(from_diffusers_state_dict(transformer.state_dict(), c.num_layers),
                                                strict=False)
    if unexpected or missing != ["pos_embed"]:  # the fixed sin-cos table is made, not stored
        raise RuntimeError(f"diffusers layout mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
