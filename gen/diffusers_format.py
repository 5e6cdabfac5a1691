"""MHSA DiT models in diffusers' layout (`DiTTransformer2DModel`), so that diffusers' `DiTPipeline` runs them,
and back.

    save_diffusers_pipeline(model, "vae-folder", "out/pipe")  # model_index.json, transformer/, vae/, scheduler/
    pipe = DiTPipeline.from_pretrained("out/pipe")             # diffusers runs it (the VAE: a folder or an object)
    save_diffusers(model, "out/transformer")                   # the transformer alone: the folder is `folder`
                                                               # itself (config.json + diffusion_pytorch_model...)
    model = load_diffusers("out/pipe")                         # our DiT again, from a pipeline or transformer folder

The pipeline's scheduler is DDIM on DiT's schedule (1000 linear betas, 1e-4 to 0.02); `id2label` ({class: "name,
other name"}) goes into model_index.json, so `pipe.get_label_ids(["name"])` works. DiTPipeline's null class is
1000, so guidance (`guidance_scale > 1`) needs an ImageNet-class model. VCA models and SiT have no DiTPipeline
counterpart: a one-line error.

diffusers keeps a copy of the timestep and class embedders in every block (the shared ones are copied in) and
splits the qkv projection. One convention differs and is not ours to change: diffusers' timestep frequencies
divide by (half - 1) where DiT divides by half (`downscale_freq_shift=1`), so its outputs differ slightly from
DiT's; with the shift set to 0 they agree to float rounding (tests/test_diffusers_format.py).
"""
import json
import os

import torch

from .errors import InvalidValue, MissingInput
from .files import atomic_folder
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
    """The transformer alone: `folder` itself gets config.json and the weights (not a pipeline; see below)."""
    with atomic_folder(folder) as temporary:
        to_diffusers(model).save_pretrained(temporary)
    return str(folder)


def dit_scheduler():
    """DDIM on DiT's schedule, as diffusers' DiT pipelines carry it."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         clip_sample=False, prediction_type="epsilon")


def save_diffusers_pipeline(model, vae, folder, id2label=None) -> str:
    """A DiTPipeline folder (model_index.json, transformer/, vae/, scheduler/) of an MHSA DiT model; `vae`: a
    diffusers AutoencoderKL or its local folder; `id2label`: {class index: "name, other name"} or None."""
    from diffusers import AutoencoderKL, DiTPipeline

    transformer = to_diffusers(model)
    if not isinstance(vae, AutoencoderKL):
        vae = AutoencoderKL.from_pretrained(vae)
    if vae.config.latent_channels != model.config.in_channels:
        raise InvalidValue(f"the VAE makes {vae.config.latent_channels}-channel latents but {model.config.name} "
                           f"takes {model.config.in_channels} channels; pass the VAE the model was trained with")
    pipeline = DiTPipeline(transformer=transformer, vae=vae, scheduler=dit_scheduler())
    with atomic_folder(folder) as temporary:
        pipeline.save_pretrained(temporary)
        if id2label:
            index_path = os.path.join(temporary, "model_index.json")
            with open(index_path) as file:
                index = json.load(file)
            index["id2label"] = {str(key): value for key, value in id2label.items()}
            with open(index_path, "w") as file:
                json.dump(index, file, indent=2)
    return str(folder)


def transformer_folder(folder) -> str:
    """The transformer folder of a pipeline root or of a transformer folder; anything else: a one-line error."""
    if os.path.isfile(os.path.join(folder, "model_index.json")):
        folder = os.path.join(folder, "transformer")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise MissingInput(f"{folder} is neither a diffusers pipeline folder (model_index.json and transformer/) nor "
                           f"a transformer folder (config.json and diffusion_pytorch_model.safetensors)")
    return folder


def load_diffusers(source):
    """Our DiT from a DiTTransformer2DModel, a DiTPipeline folder or a transformer folder (a name that is not a
    local folder goes to diffusers as a hub name of a transformer)."""
    from diffusers import DiTTransformer2DModel

    if isinstance(source, DiTTransformer2DModel):
        transformer = source
    else:
        local = os.path.isdir(source)
        transformer = DiTTransformer2DModel.from_pretrained(transformer_folder(source) if local else source)
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
