"""The one-call Python sampling API (diffusers' pipeline habit): a weights file in, images out.

    pipe = GenerationPipeline.from_pretrained("results/demo/model.safetensors")
    images = pipe(class_labels=[3, 7], num_inference_steps=25, guidance_scale=1.4, seed=0)   # list of PIL images

A file is read as sample.py reads it (gen.weights.loading): its model, its recorded VAE ("none": pixels) and
diffusion or transport settings, and its recorded sampler, steps and guidance as the call's defaults (else DiT's:
250 steps, guidance 4.0). Image i of a call is image i of sample.py's grid for the same labels and seed.
"""
import numbers

import torch
from PIL import Image

from common.errors import InvalidValue

from .family import family_of
from .sampling import resolve_precision, sample_grid
from .settings import checks
from .settings.fields import unset
from .settings.sampler import SamplingSettings
from .vae import downsampling_factor, to_uint8
from .weights.loading import Sampling, SamplingWeights, load_for_sampling, ready_sampler

OUTPUT_TYPES = ("pil", "np", "pt")


class GenerationPipeline:
    """A class-conditional DiT or SiT model with its VAE and settings; call it to draw images."""

    def __init__(self, model, vae, *, process: dict, latent_shape, vae_name="none", recorded_sampler=None,
                 precision="auto", source=None):
        self.model, self.vae, self.vae_name = model, vae, vae_name
        self.process = process  # diffusion (DiT) or transport (SiT) settings the model was trained with
        self.latent_shape = tuple(latent_shape)
        self.recorded_sampler = recorded_sampler or {}
        self.precision = precision  # as asked ("auto" too); resolved for the device at each call
        self.source = source

    @classmethod
    def from_pretrained(cls, path, device=None, vae: str | None = None, precision: str = "auto",
                        vca_kernels: str = "auto", *, model_name: str | None = None, image_size: int | None = None):
        """An export (.safetensors), a training checkpoint folder or an official DiT/SiT .pt, read as sample.py
        reads `--ckpt`: `vae` overrides the recorded VAE as `--vae` does; model_name and image_size only for
        official files with other names. Device default: cuda when there is one, else cpu."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        weights = load_for_sampling(path, device, vae=vae, precision=resolve_precision(precision, device),
                                    model_name=model_name, image_size=image_size, vca_kernels=vca_kernels)
        return cls(weights.model, weights.vae, process=weights.process, latent_shape=weights.latent_shape,
                   vae_name=weights.vae_name, recorded_sampler=weights.recorded_sampler, precision=precision,
                   source=str(path))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def family(self) -> str:
        return self.model.config.family

    @property
    def num_classes(self) -> int:
        return self.model.config.num_classes

    def to(self, device):
        """Move the model and the VAE (its dtype stays the one chosen at loading); returns the pipeline."""
        self.model.to(device)
        if self.vae is not None:
            self.vae.to(device)
        return self

    def __repr__(self):
        settings = self.sampler_settings()
        kind = family_of(self.model).sampler_option
        return (f"GenerationPipeline({self.model.name}, {self.num_classes} classes, vae={self.vae_name!r}, "
                f"device={self.device}, precision={self.precision!r}; default sampling: {getattr(settings, kind)}, "
                f"{settings.num_sampling_steps} steps, guidance {settings.cfg_scale})")

    def sampler_settings(self, num_inference_steps=None, guidance_scale=None, sampler=None, **sampler_options):
        """The sampler flags a call uses (sample.py's names): the given ones, else the file's record, else
        DiT's and SiT's defaults. `sampler`: DiT's ddpm, ddim or dpm-solver; SiT's ODE or SDE."""
        return self._sampling(num_inference_steps, guidance_scale, sampler, **sampler_options).settings

    def _sampling(self, num_inference_steps, guidance_scale, sampler, **sampler_options) -> Sampling:
        family = family_of(self.model)
        kind = family.sampler_option
        own = [key for key in family.own_options() if key != kind]
        unknown = sorted(set(sampler_options) - set(own))
        if unknown:
            raise InvalidValue(f"unknown {self.family} sampler option {unknown[0]!r}; use one of {own} (the "
                               f"{kind} itself is the sampler argument)")
        settings = unset(SamplingSettings, num_sampling_steps=num_inference_steps, cfg_scale=guidance_scale,
                         **sampler_options, **{kind: sampler})
        side = self.latent_shape[1] * downsampling_factor(self.vae)
        weights = SamplingWeights(self.model, self.vae, self.vae_name, self.latent_shape, side, self.process,
                                  self.recorded_sampler)
        return ready_sampler(weights, settings, self.source, pictures=True)

    def __call__(self, class_labels, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None, output_type: str = "pil",
                 sampler: str | None = None, progress: bool = False, **sampler_options):
        """Images of `class_labels` (an int or a list): a list of PIL images ("pil"), uint8 [N, H, W, 3] ("np") or
        float [N, 3, H, W] in [-1, 1] on the pipeline's device ("pt"). Image i is image i of sample.py's grid of
        these labels and `seed` (default 0); a torch `generator` instead picks the seed by one draw from it, so
        the same generator state gives the same images. sampler_options: the sampler's sample.py options by their
        Python names (ddim_eta; sampling_method, atol, rtol, reverse, diffusion_form, last_step, ...)."""
        labels = self._checked_labels(class_labels)
        check_call(num_inference_steps, guidance_scale, seed, generator, output_type)
        if generator is not None:
            seed = int(torch.randint(checks.MAX_SEED + 1, (1,), generator=generator, device=generator.device))
        sampling = self._sampling(num_inference_steps, guidance_scale, sampler, **sampler_options)
        settings, sample_fn = sampling.settings, sampling.sample_fn
        device = self.device
        images = sample_grid(self.model, self.vae, labels, sample_fn, latent_shape=self.latent_shape,
                             seed=0 if seed is None else seed, cfg_scale=settings.cfg_scale, device=device,
                             progress=progress, precision=resolve_precision(self.precision, device))
        if output_type == "pt":
            return images
        pixels = to_uint8(images).numpy()
        return pixels if output_type == "np" else [Image.fromarray(image) for image in pixels]

    def _checked_labels(self, class_labels) -> list[int]:
        labels = [class_labels] if isinstance(class_labels, numbers.Integral) else list(class_labels)
        if not labels or any(not isinstance(label, numbers.Integral) or not 0 <= label < self.num_classes
                             for label in labels):  # numbers.Integral: numpy's integers too
            raise InvalidValue(f"class_labels {class_labels!r} must be integers in [0, {self.num_classes}) for "
                               f"{self.model.name} (at least one)")
        return [int(label) for label in labels]


def check_call(num_inference_steps, guidance_scale, seed, generator, output_type):
    """A call's values, checked before anything is sampled; each failure is one line."""
    checks.sampling_steps(num_inference_steps, "num_inference_steps")
    checks.guidance_scale(guidance_scale, "guidance_scale")
    if seed is not None and generator is not None:
        raise InvalidValue("give seed or generator, not both (a generator picks the seed)")
    checks.value_within(seed, 0, checks.MAX_SEED, "seed")
    if output_type not in OUTPUT_TYPES:
        raise InvalidValue(f"unknown output_type {output_type!r}; use one of {list(OUTPUT_TYPES)}")
