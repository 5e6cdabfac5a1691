"""Encode a data set once with the VAE (each image and its mirror image) into a latent folder for training.

    accelerate launch extract_latents.py --data-path data/imagenet/train --image-size 256 --vae ema \\
        --output data/latents-256-ema
    accelerate launch train_dit.py --config configs/dit-s2-vca-256.yaml --latents data/latents-256-ema

Shards already written are skipped, so rerunning the same command resumes an interrupted extraction.
Training with --latents checks that the folder was made with the same --vae and --image-size.

With --enc-type (REPA's encoder), each image's and mirror image's encoder features are stored beside its latents,
so that a REPA run from --latents needs neither the images nor the encoder. They are large: grid^2 x width values
per view (DINOv2-B on 16 x 16 tokens: 2 x 256 x 768 in float16, 786 KB an image, 48 times its SD-VAE latents;
about 1 TB for ImageNet's 1.28M images); REPA itself runs the encoder on every batch (train from --data-path).
"""
import os

from accelerate import Accelerator

from common.cli import ArgumentParser, parse_with_config, run_command
from gen.data import open_image_dataset
from gen.data.latents import DTYPES, extract_latents, extraction_plan, feature_plan
from gen.encoders import load_encoder
from gen.settings.extraction import ExtractionSettings
from gen.settings.flags import add_flags
from gen.vae import latent_shape, load_vae


def parse_args(argv=None):
    return parse_with_config(add_flags(ArgumentParser(description=__doc__), ExtractionSettings), argv)


def main(argv=None):
    args = parse_args(argv)
    ExtractionSettings.validate(args)
    accelerator = Accelerator()
    vae = load_vae(args.vae, accelerator.device)
    dataset = open_image_dataset(args.data_path, args.image_size, strict=args.strict)
    channels, side = latent_shape(vae, args.image_size)
    encoder = None if args.enc_type is None else load_encoder(args.enc_type, accelerator.device)
    features = None if encoder is None else feature_plan(args.enc_type, args.enc_grid or side // 2, encoder.dim)
    plan = extraction_plan(dataset, vae_name=args.vae, image_size=args.image_size, latent_shape=(channels, side, side),
                           shard_size=args.shard_size, dtype=args.dtype,
                           source=os.path.abspath(args.data_path) if args.data_path else "digits",
                           seed=args.global_seed, features=features)
    manifest = extract_latents(dataset, vae, args.output, plan, accelerator=accelerator, batch_size=args.batch_size,
                               num_workers=args.num_workers, encoder=encoder)
    if accelerator.is_main_process:
        print(f"{args.output}: {manifest['count']:,} latents {manifest['shape']} ({manifest['dtype']}, x2 with the "
              f"flips) of {manifest['source_count']:,} images; {len(manifest['skipped'])} unreadable images skipped"
              + "".join(f"\n  skipped {path}" for path in manifest["skipped"][:20])
              + (f"\n  with {args.enc_type} features of a {features['grid']}x{features['grid']} grid: "
                 f"{feature_bytes(features, args.dtype):,} bytes an image" if features else ""))


def feature_bytes(features: dict, dtype: str) -> int:
    """Bytes of one image's stored features (the image and its mirror image)."""
    return 2 * features["grid"] ** 2 * features["dim"] * DTYPES[dtype].itemsize


if __name__ == "__main__":
    run_command(main)
