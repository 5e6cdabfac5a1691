"""A model card (the hub's README.md) for a weights file: the metadata block the hub reads (library, tags, pipeline
tag; the license left for the owner to choose), the model, its data and training settings, the metrics its run
measured (the last evaluation of log.jsonl) and how to sample it. Written beside a run's export and into every
diffusers folder; upload either with huggingface_hub:

    from huggingface_hub import HfApi
    HfApi().upload_folder(folder_path="out/pipe", repo_id="you/name")   # after choosing a license in README.md
"""
import json
import os

import yaml

from common.files import atomic_open

from ..family import family_of
from ..run_log import RUN_RECORD, log_path, read_log

CARD_NAME = "README.md"
# the training settings a reader asks for first, in this order (the whole record is the run's args.json)
SHOWN_SETTINGS = ("data_path", "latents", "image_size", "vae", "latent_norm", "num_classes", "global_batch_size",
                  "max_steps", "epochs", "lr", "adam_beta2", "weighting", "cos_loss", "enc_type", "encoder_depth",
                  "proj_coeff", "mixed_precision", "global_seed")


def run_folder_of(weights_path) -> str | None:
    """The run folder a weights file lies in (it holds the run's args.json), else None."""
    folder = os.path.dirname(os.path.abspath(weights_path))
    return folder if os.path.isfile(os.path.join(folder, RUN_RECORD)) else None


def last_evaluation(run_folder) -> dict | None:
    path = log_path(run_folder)
    if not os.path.isfile(path):
        return None
    evaluations = [record for record in read_log(path) if "fid" in record]
    return evaluations[-1] if evaluations else None


def metadata_block(model, diffusers_folder: bool) -> str:
    config = model.config
    meta = {"library_name": "diffusers" if diffusers_folder else "vca-gen",
            "pipeline_tag": "unconditional-image-generation",  # the hub's nearest: class-conditional, no text
            "tags": ["class-conditional", "image-generation", config.family.lower(), config.attention,
                     family_of(config).hub_tag],
            "license": None}
    text = yaml.safe_dump(meta, sort_keys=False).replace("license: null", "license:  # yours to choose before "
                                                          "uploading (DiT's own weights: cc-by-nc-4.0)")
    return f"---\n{text}---\n"


def model_card(model, weights_name: str, *, run_folder=None, diffusers_folder=False, custom_code=True,
               sampler=None) -> str:
    """The card's text for `model` saved as `weights_name` (a file name or a folder); `run_folder` (its args.json
    and log.jsonl) adds the training settings and metrics; a diffusers folder runs with or without `custom_code`;
    `sampler`: the recorded sampling settings."""
    config = model.config
    parameters = sum(parameter.numel() for parameter in model.parameters())
    lines = [metadata_block(model, diffusers_folder), f"# {model.name}", "",
             f"A class-conditional {config.family} ({family_of(config).process_name}) "
             f"transformer with {'Visual-Contrast Attention (VCA)' if config.attention == 'vca' else 'self-attention'}"
             f", trained with the vca-gen toolkit: {parameters:,} parameters, {config.depth} blocks of width "
             f"{config.hidden_size}, {config.input_size} x {config.input_size} x {config.in_channels} inputs "
             f"({'pixels' if config.in_channels == 3 else 'VAE latents'}), {config.num_classes} classes."
             + (f" Options: {', '.join(config.recipe_options())}." if config.recipe_options() else ""), ""]
    if run_folder is not None:
        with open(os.path.join(run_folder, RUN_RECORD)) as handle:
            settings = json.load(handle)
        shown = [(key, settings[key]) for key in SHOWN_SETTINGS if settings.get(key) not in (None, False)]
        lines += ["## Training", "", "| setting | value |", "| --- | --- |",
                  *[f"| {key} | {value} |" for key, value in shown], "",
                  f"Every setting: the run's `{RUN_RECORD}`.", ""]
        evaluation = last_evaluation(run_folder)
        if evaluation is not None:
            scores = [(key, value) for key, value in evaluation.items()
                      if key not in ("step", "train_seconds", "train_flops") and isinstance(value, (int, float))]
            lines += ["## Measured", "", f"At step {evaluation['step']} (the run's last evaluation, "
                      f"log.jsonl):", "", "| metric | value |", "| --- | --- |",
                      *[f"| {key} | {value:.4g} |" for key, value in scores], ""]
    lines += ["## Sampling", ""]
    if sampler:
        lines += ["Recorded defaults: " + ", ".join(f"{key} {value}" for key, value in sampler.items()), ""]
    if diffusers_folder:
        trust = (", trust_remote_code=True)  # its code imports the vca-gen project: install it first" if custom_code
                 else ")  # diffusers' own DiTPipeline")
        lines += ["```python", "from diffusers import DiffusionPipeline", "",
                  f'pipe = DiffusionPipeline.from_pretrained("{weights_name}"{trust}',
                  'images = pipe(class_labels=[0, 1]).images', "```", ""]
    else:
        lines += ["```bash", f"python sample.py --ckpt {weights_name}   # a grid; --num-fid-samples 50000 for FID",
                  "```", "", "```python", "import gen", "",
                  f'pipe = gen.GenerationPipeline.from_pretrained("{weights_name}")',
                  "images = pipe(class_labels=[0, 1])", "```", ""]
    return "\n".join(lines)


def write_model_card(folder, model, weights_name: str, **options) -> str:
    """Write `folder`/README.md whole or not at all (the caller owns `folder`: a run or a pipeline folder)."""
    path = os.path.join(folder, CARD_NAME)
    with atomic_open(path, "w") as handle:
        handle.write(model_card(model, weights_name, **options))
    return path
