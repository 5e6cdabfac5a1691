"""Our models as diffusers pipeline folders, and back.

MHSA DiT models trained on DiT's diffusion go to diffusers' own layout (`DiTTransformer2DModel`), which its
`DiTPipeline` runs as it is; VCA models, SiT models (MHSA or VCA) and DiT models of another diffusion process go to
diffusers' custom-code layout, which `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` loads:

    save_diffusers_pipeline(model, "vae-folder", "out/pipe")  # or an export's path: its process and sampler too
    pipe = DiTPipeline.from_pretrained("out/pipe")             # an MHSA DiT (the VAE: a folder or an object)
    pipe = DiffusionPipeline.from_pretrained("out/pipe", trust_remote_code=True)   # any of them
    images = pipe(class_labels=[3, 7], num_inference_steps=25, guidance_scale=1.5,
                  generator=torch.Generator().manual_seed(0)).images               # PIL images
    save_diffusers(model, "out/transformer")                   # the transformer alone (MHSA DiT): the folder is
                                                               # `folder` itself (config.json + diffusion_pytorch...)
    model = load_diffusers("out/pipe")                         # our model again, from a pipeline or transformer folder
    python -m gen.hub.diffusers_format model.safetensors out/pipe [--vae FOLDER] [--custom]   # the command line

DiTPipeline folders: the scheduler is DDIM on DiT's schedule (1000 linear betas, 1e-4 to 0.02); `id2label`
({class: "name, other name"}) goes into model_index.json, so `pipe.get_label_ids(["name"])` works. DiTPipeline's
null class is 1000, so guidance (`guidance_scale > 1`) needs an ImageNet-class model.

Custom folders: model_index.json names `gen_pipeline.GenPipeline` (gen_pipeline.py in the root) and
`transformer/gen_transformer.GenTransformer` (a diffusers ModelMixin whose config is our ModelConfig and whose
weights are our model's); both files are copies of gen/hub/remote/, thin wrappers that import `gen`, so the
project must be installed where the folder is loaded (else an ImportError says so). model_index.json also records
`process` (the diffusion or transport settings), `sampler` (training's sampler, steps and guidance: the call's
defaults) and `id2label`. The pipeline samples with gen's GenerationPipeline, so its PIL images are exactly
GenerationPipeline's and sample.py's for the same labels, seed (a `generator` draws it), steps and guidance;
`output_type="np"`/`"pt"` give floats in [0, 1] as diffusers does. DiT folders carry DDIM on the model's own
diffusion (schedule, chain length, eps or x0) under scheduler/ as a record for diffusers tools (gen's samplers do
the sampling: `sampler="ddpm"|"ddim"|"dpm-solver"`); SiT has no diffusers scheduler (scheduler: null).

diffusers keeps a copy of the timestep and class embedders in every block (the shared ones are copied in) and
splits the qkv projection. One convention differs and is not ours to change: diffusers' timestep frequencies
divide by (half - 1) where DiT divides by half (`downscale_freq_shift=1`), so its outputs differ slightly from
DiT's; with the shift set to 0 they agree to float rounding (tests/test_diffusers_format.py).
"""
import json
import os
import shutil

import torch

from common.errors import InvalidValue, MissingInput, UserError
from common.files import atomic_folder, check_replaceable

from ..family import family_of
from ..models import create_model
from ..models.config import SIZES
from ..settings.process import DIFFUSION_DEFAULTS
from ..weights.export import load_pretrained, read_settings
from ..weights.model_card import run_folder_of, write_model_card

REMOTE_CODE = os.path.join(os.path.dirname(__file__), "remote")
PIPELINE_WRITER = "gen.hub.diffusers_format"  # the marker that lets a later export replace this one
REMOTE_FILES = {"gen_pipeline.py": "", "gen_transformer.py": "transformer"}  # file: its subfolder in the export
DIT_PIPELINE_CLASSES = 1000  # diffusers' DiTPipeline guides with class 1000 as the null class, whatever the model


def diffusers_config(config) -> dict:
    if config.attention != "mhsa" or not family_of(config).diffusers_native or config.recipe_options():
        extras = f" with {', '.join(config.recipe_options())}" if config.recipe_options() else ""
        raise InvalidValue(f"diffusers' DiTTransformer2DModel holds MHSA DiT models with DiT's blocks; "
                           f"{config.name}{extras} is not one: export it with --custom")
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
    with atomic_folder(folder, PIPELINE_WRITER, "the transformer folder") as temporary:
        to_diffusers(model).save_pretrained(temporary)
    return str(folder)


def dit_scheduler(process: dict | None = None):
    """DDIM on the schedule of the diffusion settings `process` (None: DiT's: 1000 linear betas, 1e-4 to 0.02,
    eps prediction), as diffusers' DiT pipelines carry it."""
    from diffusers import DDIMScheduler

    process = {**DIFFUSION_DEFAULTS, **(process or {})}
    steps = process["diffusion_steps"]
    scale = 1000 / steps  # ADM's linear schedule, stretched to other chain lengths
    schedule = {"linear": "linear", "cosine": "squaredcos_cap_v2"}[process["noise_schedule"]]
    return DDIMScheduler(num_train_timesteps=steps, beta_start=scale * 1e-4, beta_end=scale * 0.02,
                         beta_schedule=schedule, clip_sample=False,
                         prediction_type="sample" if process["predict_xstart"] else "epsilon")


def save_diffusers_pipeline(model, vae, folder, id2label=None, *, process=None, sampler=None,
                            custom=None) -> str:
    """A diffusers pipeline folder of `model` (our model, or the path of an export or checkpoint folder, whose
    recorded process and sampler are used when not given); `vae`: a diffusers AutoencoderKL or its local folder
    (None for a pixel model); `id2label`: {class index: "name, other name"} or None.

    MHSA DiT models of 1,000 classes on VAE latents, trained on DiT's diffusion: a DiTPipeline folder
    (model_index.json, transformer/, vae/, scheduler/). Other models (VCA, SiT, pixels, other class counts,
    another diffusion process), or `custom=True`: a folder of diffusers' custom-code layout (save_custom_pipeline),
    which samples them with gen's own sampling."""
    run_folder = None
    if isinstance(model, (str, os.PathLike)):
        run_folder = run_folder_of(model)
        recorded = read_settings(model)
        check_no_channel_norm(model, recorded)
        model = load_pretrained(model)
        process, sampler = process or recorded.get("process"), sampler or recorded.get("sampler")
    if custom is None:
        custom = not fits_dit_pipeline(model, vae, process)
    if custom:
        return save_custom_pipeline(model, vae, folder, id2label, process=process, sampler=sampler,
                                    run_folder=run_folder)
    from diffusers import DiTPipeline

    transformer = to_diffusers(model)
    pipeline = DiTPipeline(transformer=transformer, vae=checked_vae(vae, model), scheduler=dit_scheduler())
    with atomic_folder(folder, PIPELINE_WRITER, "the pipeline folder") as temporary:
        pipeline.save_pretrained(temporary)
        write_model_card(temporary, model, os.fspath(folder), run_folder=run_folder, diffusers_folder=True,
                         custom_code=False, sampler=sampler)
        if id2label:
            index_path = os.path.join(temporary, "model_index.json")
            with open(index_path) as file:
                index = json.load(file)
            index["id2label"] = {str(key): value for key, value in id2label.items()}
            with open(index_path, "w") as file:
                json.dump(index, file, indent=2)
    return str(folder)


def check_no_channel_norm(weights, recorded: dict):
    if recorded.get("latent_norm") is not None:
        raise UserError(f"{weights} was trained with --latent-norm channel, whose statistics diffusers pipeline "
                        f"folders do not carry; sample it with sample.py or gen.GenerationPipeline")


def fits_dit_pipeline(model, vae, process) -> bool:
    """Whether diffusers' own DiTPipeline samples `model` as trained: an MHSA DiT with DiT's blocks and diffusion,
    on VAE latents (DiTPipeline always decodes), of 1,000 classes (its guidance's null class is 1000, not the
    model's)."""
    config = model.config
    family = family_of(config)
    return (family.diffusers_native and config.attention == "mhsa" and not config.recipe_options() and vae is not None
            and config.num_classes == DIT_PIPELINE_CLASSES
            and family.recorded_process(model, process) == family.recorded_process(model, None))


def checked_vae(vae, model):
    """`vae` (an AutoencoderKL or its folder) loaded, and checked to make `model`'s latents."""
    from diffusers import AutoencoderKL

    if not isinstance(vae, AutoencoderKL):
        vae = AutoencoderKL.from_pretrained(vae)
    if vae.config.latent_channels != model.config.in_channels:
        raise InvalidValue(f"the VAE makes {vae.config.latent_channels}-channel latents but {model.config.name} "
                           f"takes {model.config.in_channels} channels; pass the VAE the model was trained with")
    return vae


def save_custom_pipeline(model, vae, folder, id2label=None, *, process=None, sampler=None, run_folder=None) -> str:
    """A folder in diffusers' custom-code layout: model_index.json names gen_pipeline.GenPipeline (root
    gen_pipeline.py) and transformer/gen_transformer.GenTransformer (our model's config and weights); vae/ (none
    for a pixel model); scheduler/ for DiT (DDIM on the model's diffusion, a record; SiT has none). The wrappers import
    `gen`; `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads it."""
    import diffusers

    from .remote.gen_transformer import GenTransformer

    if vae is None and model.config.in_channels != 3:
        raise InvalidValue(f"{model.config.name} makes {model.config.in_channels}-channel latents; pass its VAE")
    vae = None if vae is None else checked_vae(vae, model)
    family = family_of(model)
    index = {"_class_name": ["gen_pipeline", "GenPipeline"], "_diffusers_version": diffusers.__version__,
             "transformer": ["gen_transformer", "GenTransformer"],
             "vae": ["diffusers", "AutoencoderKL"] if vae is not None else [None, None],
             "scheduler": ["diffusers", "DDIMScheduler"] if family.diffusers_native else [None, None],
             "process": family.recorded_process(model, process), "sampler": sampler,
             "id2label": {str(key): value for key, value in id2label.items()} if id2label else None}
    with atomic_folder(folder, PIPELINE_WRITER, "the pipeline folder") as temporary:
        GenTransformer.from_model(model).save_pretrained(os.path.join(temporary, "transformer"))
        if vae is not None:
            vae.save_pretrained(os.path.join(temporary, "vae"))
        if family.diffusers_native:
            dit_scheduler(index["process"]).save_pretrained(os.path.join(temporary, "scheduler"))
        for name, subfolder in REMOTE_FILES.items():
            shutil.copyfile(os.path.join(REMOTE_CODE, name), os.path.join(temporary, subfolder, name))
        with open(os.path.join(temporary, "model_index.json"), "w") as file:
            json.dump(index, file, indent=2)
        write_model_card(temporary, model, os.fspath(folder), run_folder=run_folder, diffusers_folder=True,
                         sampler=sampler)
    return str(folder)


def transformer_folder(folder) -> str:
    """The transformer folder of a pipeline root or of a transformer folder; anything else: a one-line error."""
    if os.path.isfile(os.path.join(folder, "model_index.json")):
        folder = os.path.join(folder, "transformer")
    weights = os.path.isdir(folder) and any(name.startswith("diffusion_pytorch_model") for name in os.listdir(folder))
    if not (weights and os.path.isfile(os.path.join(folder, "config.json"))):
        raise MissingInput(f"{folder} is neither a diffusers pipeline folder (model_index.json and transformer/) nor "
                           f"a transformer folder (config.json and diffusion_pytorch_model.safetensors)")
    return folder


def load_diffusers(source):
    """Our model from a DiTTransformer2DModel or GenTransformer, a pipeline folder (DiTPipeline's or our custom
    one) or a transformer folder (a name that is not a local folder goes to diffusers as a hub name of a
    DiTTransformer2DModel)."""
    from diffusers import DiTTransformer2DModel

    from .remote.gen_transformer import GenTransformer

    if isinstance(source, (DiTTransformer2DModel, GenTransformer)):
        transformer = source
    elif not os.path.isdir(source):
        transformer = DiTTransformer2DModel.from_pretrained(source)
    else:
        folder = transformer_folder(source)
        with open(os.path.join(folder, "config.json")) as file:
            custom = json.load(file).get("_class_name") == GenTransformer.__name__
        transformer = (GenTransformer if custom else DiTTransformer2DModel).from_pretrained(folder)
    if isinstance(transformer, GenTransformer):
        return transformer.model.eval()
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


def main(argv=None):
    """python -m gen.hub.diffusers_format WEIGHTS FOLDER [--vae VAE] [--custom]"""
    from common.cli import ArgumentParser

    from ..vae import load_vae
    from ..weights.loading import resolve_vae

    description = ("An export or training checkpoint as a diffusers pipeline folder, with its recorded process and "
                   "sampler: DiTPipeline's layout for MHSA DiT models, diffusers' custom-code layout for the others.")
    parser = ArgumentParser(prog="python -m gen.hub.diffusers_format", description=description)
    parser.add_argument("weights", help="an export (.safetensors), a training checkpoint folder or an official .pt")
    parser.add_argument("folder", help="the pipeline folder to write: new, empty, or an earlier export of this command "
                                          "(replaced whole); a folder of other files is refused")
    parser.add_argument("--vae", default=None, help="a local AutoencoderKL folder, ema, mse or a hub name in the hub "
                                                    "cache; default: the one the weights record (else ema)")
    parser.add_argument("--custom", action="store_true", default=None,
                        help="the custom-code layout for an MHSA DiT too (VCA and SiT models always get it)")
    args = parser.parse_args(argv)
    check_replaceable(args.folder, PIPELINE_WRITER, "the pipeline folder")  # before the weights and VAE load
    settings = read_settings(args.weights)
    check_no_channel_norm(args.weights, settings)  # before a VAE loads, perhaps from the hub
    vae = load_vae(resolve_vae(args.weights, args.vae, settings.get("vae"), official=not settings))
    folder = save_diffusers_pipeline(args.weights, vae, args.folder, custom=args.custom)
    print(f"wrote {folder}: load it with DiffusionPipeline.from_pretrained({folder!r}, trust_remote_code=True)")


if __name__ == "__main__":
    from common.cli import run_command

    run_command(main)
