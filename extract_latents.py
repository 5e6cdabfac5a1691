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
from gen.data.latents import DTYPES, LatentSetError, extract_latents, extraction_plan, feature_plan
from gen.encoders import check_enc_type, load_encoder
from gen.settings import checks
from gen.settings.data import DEFAULT_IMAGE_SIZE, DEFAULT_WORKERS
from gen.vae import latent_shape, load_vae


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data-path", default=None,
                        help="ImageFolder (root/<class>/<image>); without it, the built-in scikit-learn digits")
    parser.add_argument("--output", required=True, help="the latent folder (created, or completed when resumed)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--vae", default="ema", help="ema | mse | a local AutoencoderKL folder")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="how latents are stored")
    parser.add_argument("--shard-size", type=int, default=10_000, help="images per shard (the unit of resumption)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per VAE batch (per process)")
    parser.add_argument("--num-workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--strict", action="store_true", help="stop at an unreadable image instead of skipping it")
    parser.add_argument("--global-seed", type=int, default=0, help="seeds the posterior samples")
    parser.add_argument("--enc-type", default=None,
                        help="also store REPA's features of this encoder (train.py's --enc-type values): large, see "
                             "above")
    parser.add_argument("--enc-grid", type=int, default=None,
                        help="the token grid the features are made for: the trained model's (default: the latent "
                             "side / 2, patch size 2)")
    return parse_with_config(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if args.vae == "none":
        raise LatentSetError("--vae none trains on pixels directly; there is nothing to extract")
    checks.at_least(args, 1, "image_size", "shard_size", "batch_size", "enc_grid")
    if args.enc_type is not None:
        check_enc_type(args.enc_type)
    checks.at_least(args, 0, "num_workers")
    if args.data_path is not None and not os.path.isdir(args.data_path):
        raise LatentSetError(f"--data-path {args.data_path} is not a folder; check the path")
    checks.writable_folder(args.output, "--output")
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
