"""A diffusers pipeline for the DiT and SiT models of the vca-gen project (package `gen`) that diffusers' own
DiTPipeline cannot run (VCA attention; SiT's transport): it samples with the project's GenerationPipeline, so
its PIL images are those of `gen.GenerationPipeline` and sample.py for the same labels, seed, steps and guidance.

Copied into the root of a custom diffusers folder (gen.hub.diffusers_format); diffusers imports it there:

    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    images = pipe(class_labels=[3, 7], num_inference_steps=25, guidance_scale=1.5,
                  generator=torch.Generator().manual_seed(0)).images
"""
try:
    from gen.pipeline import GenerationPipeline
except ImportError as error:
    raise ImportError(f"this diffusers folder holds a model of the vca-gen project, whose package `gen` cannot be "
                      f"imported here ({error}); install the project where you load the folder: `pip install "
                      f"path/to/the/project` (or `pip install -e .` in its checkout)") from error
import numbers

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput


class GenPipeline(DiffusionPipeline):
    """transformer: gen_transformer.GenTransformer; vae: AutoencoderKL (None: a pixel model); scheduler: DiT's
    DDIMScheduler on its training schedule, a record for diffusers tools (None for SiT: no diffusers counterpart);
    the sampling itself is gen's. process: the diffusion (DiT) or transport (SiT) settings the model was trained
    with; sampler: the sampler, steps and guidance of training's samples (the call's defaults), or None."""

    _optional_components = ["vae", "scheduler"]

    def __init__(self, transformer, vae=None, scheduler=None, process=None, sampler=None, id2label=None):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.register_to_config(process=process, sampler=sampler, id2label=id2label)
        self.labels = {}  # DiTPipeline's: "name" -> class index
        for key, value in (id2label or {}).items():
            for label in value.split(","):
                self.labels[label.strip()] = int(key)

    def get_label_ids(self, label):
        """Class indices of names recorded in id2label (DiTPipeline's method)."""
        labels = [label] if isinstance(label, str) else list(label)
        missing = [name for name in labels if name not in self.labels]
        if missing:
            raise ValueError(f"{missing[0]!r} is not a recorded class name; the names: {sorted(self.labels)}")
        return [self.labels[name] for name in labels]

    def save_pretrained(self, save_directory, push_to_hub=False, **kwargs):
        """The folder as gen's exporter writes it, this code included, so that it loads again: diffusers' own save
        would name this module `diffusers_modules.local...` and leave the code behind. Weights are safetensors."""
        from gen.hub.diffusers_format import save_custom_pipeline

        if push_to_hub:
            raise ValueError("save the folder, then upload it with huggingface_hub's upload_folder (the project's "
                             "docs/sampling.md, diffusers)")
        save_custom_pipeline(self.transformer.model, self.vae, save_directory, self.config.id2label,
                             process=dict(self.config.process), sampler=self.config.sampler)

    def sampling_pipeline(self) -> GenerationPipeline:
        """This folder's model as gen's GenerationPipeline (sharing the modules)."""
        config = self.transformer.config
        return GenerationPipeline(self.transformer.model, self.vae, process=dict(self.config.process),
                                  latent_shape=(config.in_channels, config.input_size),
                                  vae_name="none" if self.vae is None else "the folder's vae",
                                  recorded_sampler=self.config.sampler, source=self.config.get("_name_or_path"))

    @torch.no_grad()
    def __call__(self, class_labels, *, num_inference_steps=None, guidance_scale=None, generator=None,
                 output_type="pil", return_dict=True, seed=None, sampler=None, **sampler_options):
        """Images of `class_labels`: `.images`, PIL images ("pil"), else floats in [0, 1] as diffusers gives them:
        [N, H, W, 3] numpy ("np") or [N, 3, H, W] torch ("pt"). Steps and guidance default to the export's
        record, else gen's defaults (DiT: ddpm, 250 steps; SiT: ODE, 250 steps; guidance 4.0); as in diffusers, a
        guidance_scale of 1 or less means none. `generator` picks the seed by one draw (or pass `seed`); a list of
        generators, one per label, draws each image from its own. `sampler` and sampler_options as
        gen.GenerationPipeline takes them (DiT: ddpm, ddim, dpm-solver; SiT: ODE, SDE). The progress bar follows
        set_progress_bar_config(disable=...)."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"unknown output_type {output_type!r}; use pil, np or pt")
        labels = [class_labels] if isinstance(class_labels, numbers.Integral) else list(class_labels)
        if not labels:
            raise ValueError("class_labels is empty; pass at least one class index")
        generators = generator if isinstance(generator, list) else [generator]
        if isinstance(generator, list) and len(generator) != len(labels):
            raise ValueError(f"{len(generator)} generators for {len(labels)} class labels; pass one per label, or one")
        pieces = [(labels, generators[0])] if not isinstance(generator, list) else [
            ([label], one) for label, one in zip(labels, generators, strict=True)]
        options = dict(num_inference_steps=num_inference_steps, seed=seed, sampler=sampler,
                       guidance_scale=None if guidance_scale is None else max(float(guidance_scale), 1.0),
                       progress=not getattr(self, "_progress_bar_config", {}).get("disable", False),
                       output_type="pil" if output_type == "pil" else "pt", **sampler_options)
        pipeline = self.sampling_pipeline()
        drawn = [pipeline(part, generator=one, **options) for part, one in pieces]
        if output_type == "pil":
            images = [image for part in drawn for image in part]
        else:
            images = (torch.cat(drawn).float() / 2 + 0.5).clamp(0, 1)
            images = images.cpu().permute(0, 2, 3, 1).numpy() if output_type == "np" else images
        return ImagePipelineOutput(images=images) if return_dict else (images,)
