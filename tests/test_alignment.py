"""REPA's representation alignment: the loss equals REPA's on fixed features (tests/fixtures/recipe_anchors), the
encoders give one feature per token of the network's grid (the digits' own, trained here without labels; a timm
ViT from a folder, as DINOv2 comes offline), and a run with --enc-type trains, exports its projector and samples."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tolerances import ARITHMETIC, assert_close_to_recorded

from common.cli import run_command
from common.digits import load_digit_arrays, upscale_digits
from gen.encoders import DigitsEncoder, load_encoder
from gen.training.alignment import alignment_loss

ANCHORS = os.path.join(os.path.dirname(__file__), "fixtures", "recipe_anchors.safetensors")


def test_the_alignment_loss_is_repas():
    anchors = load_file(ANCHORS)
    ours = alignment_loss(anchors["repa_align.z_tilde"], anchors["repa_align.z"]).mean()
    assert_close_to_recorded(ours.reshape(1), anchors["repa_align.proj_loss"], ARITHMETIC, "REPA's proj_loss")


@pytest.fixture(scope="module")
def digits_encoder():
    return load_encoder("digits")  # trained once (about 20 s on a CPU core), then read from the cache


def view_retrieval(encoder, images) -> float:
    """How often a digit's second random view is the nearest (of all views) to its first: SimCLR's own task."""
    from gen.encoders.digits import augmented

    generator = torch.Generator().manual_seed(1)
    grey = images.mean(dim=1, keepdim=True)
    with torch.no_grad():
        views = torch.cat([augmented(grey, generator), augmented(grey, generator)])
        unit = F.normalize(encoder.pooled(views), dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-2)
    return float((similarity.argmax(1) == torch.arange(len(views)).roll(len(images))).float().mean())


def test_the_digits_encoder_learned_the_digits_without_their_labels(digits_encoder):
    grey, _ = load_digit_arrays()
    images = torch.from_numpy(upscale_digits(grey[:256], 16)).permute(0, 3, 1, 2).float() / 127.5 - 1
    features = digits_encoder(images, 4)
    assert features.shape == (len(images), 16, digits_encoder.dim) and not features.requires_grad
    torch.manual_seed(0)
    untrained, trained = view_retrieval(DigitsEncoder(), images), view_retrieval(digits_encoder, images)
    assert trained > untrained + 0.15, (trained, untrained)


def test_a_timm_vit_from_a_folder_gives_a_feature_per_token(tmp_path):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, img_size=56, depth=2, embed_dim=48,
                            num_heads=2)
    save_for_hf(vit, str(tmp_path / "vit"))
    encoder = load_encoder(str(tmp_path / "vit"))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    features = encoder(images, 8)  # 8 x 8 tokens: the images seen at 8 x 14 = 112 px
    assert features.shape == (2, 64, 48) and torch.isfinite(features).all()


def test_unknown_encoders_are_named():
    from common.errors import UserError

    with pytest.raises(UserError, match="--enc-type 'dinov3' is neither one of"):
        load_encoder("dinov3")


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
def test_a_repa_run_trains_exports_its_projector_and_samples(tmp_path, digits_encoder):
    import sample
    import train_sit
    from gen.weights.export import load_pretrained

    run_command(train_sit.main, ["--model", "SiT-Mini/2", "--image-size", "8", "--num-classes", "10",
                                 "--global-batch-size", "8", "--num-workers", "0", "--vae", "none", "--log-every", "1",
                                 "--sample-every", "0", "--max-steps", "2", "--ckpt-every", "2", "--log-with", "none",
                                 "--final-samples", "0", "--enc-type", "digits", "--encoder-depth", "2",
                                 "--projector-dim", "64", "--sampling-method", "euler", "--num-sampling-steps", "3",
                                 "--results-dir", str(tmp_path / "run")])
    model = load_pretrained(tmp_path / "run" / "model.safetensors")
    assert (model.config.repa_depth, model.config.repa_dim, model.config.repa_projector_dim) == (2, 32, 64)
    assert model.projector[-1].out_features == 32 and model.aligned_tokens is None  # eval: not computed
    records = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert all(np.isfinite(record["loss"]) for record in records if "loss" in record)
    run_command(sample.main, ["--ckpt", str(tmp_path / "run" / "model.safetensors"), "--num-fid-samples", "2",
                              "--sample-dir", str(tmp_path / "s")])
    assert np.load(tmp_path / "s" / "samples.npz")["arr_0"].shape == (2, 8, 8, 3)


def test_the_alignment_pulls_the_projection_towards_the_features(digits_encoder):
    """One optimiser step on the alignment alone raises the cosine between projected tokens and features."""
    from gen.models import create_model
    from gen.training.alignment import AlignedLoss

    torch.manual_seed(0)
    model = create_model("SiT-Mini/2", input_size=16, in_channels=3, num_classes=10, repa_depth=2,
                         repa_dim=digits_encoder.dim, repa_projector_dim=64).train()
    images, y = torch.rand(8, 3, 16, 16) * 2 - 1, torch.arange(8)
    loss_fn = AlignedLoss(lambda model, x, y: 0 * model(x, torch.rand(len(x)), y).mean((1, 2, 3)), digits_encoder)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = loss_fn(model, images, y, images=images).mean()
    before.backward()
    optimizer.step()
    after = loss_fn(model, images, y, images=images).mean()
    assert after < before


@pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")
def test_repa_trains_from_a_latent_set_with_stored_features(tmp_path, image_folder, tiny_vae, monkeypatch):
    """extract_latents.py --enc-type stores each view's features; a REPA run from --latents aligns with them and
    never loads the encoder; a set without them, of another encoder or of another token grid is refused."""
    import timm
    from timm.models import save_for_hf

    import extract_latents
    import train_sit
    from common.errors import UserError
    from gen.data import ImageFolderDataset, LatentDataset
    from gen.encoders import load_encoder as real_load_encoder

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, img_size=56, depth=1, embed_dim=24,
                            num_heads=2)
    save_for_hf(vit, str(tmp_path / "vit"))
    latents = tmp_path / "latents"
    extract = ["--data-path", image_folder, "--image-size", "16", "--vae", tiny_vae, "--shard-size", "5",
               "--num-workers", "0", "--batch-size", "4", "--dtype", "float32"]
    run_command(extract_latents.main, [*extract, "--output", str(latents), "--enc-type", str(tmp_path / "vit")])
    dataset = LatentDataset(str(latents), enc_type=str(tmp_path / "vit"))
    (latent, features), label = dataset[(3, True)]
    assert latent.shape == (4, 8, 8) and features.shape == (16, 24)  # the default grid: latent side 8 / patch 2
    image, _ = ImageFolderDataset(image_folder, 16)[int(dataset.read(dataset.shard_files[0], "indices")[3])]
    encoder = real_load_encoder(str(tmp_path / "vit"))
    expected = encoder(image.flip(-1)[None], 4)[0]
    assert torch.allclose(features, expected, atol=1e-5)  # the mirror image's features, as its latent

    def no_encoder(*args):
        raise AssertionError("the encoder was loaded although the latent set stores its features")

    monkeypatch.setattr("gen.training.loop.load_encoder", no_encoder)
    train = ["--model", "SiT-Mini/2", "--image-size", "16", "--num-classes", "3", "--global-batch-size", "4",
             "--num-workers", "0", "--vae", tiny_vae, "--log-every", "1", "--sample-every", "0", "--max-steps", "2",
             "--ckpt-every", "2", "--log-with", "none", "--final-samples", "0", "--encoder-depth", "2",
             "--projector-dim", "32", "--latents", str(latents)]
    run_command(train_sit.main, [*train, "--enc-type", str(tmp_path / "vit"), "--results-dir", str(tmp_path / "run")])
    records = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert all(np.isfinite(record["loss"]) for record in records if "loss" in record)

    with pytest.raises(UserError, match="holds features of --enc-type .*vit, this run asks for digits"):
        train_sit.main([*train, "--enc-type", "digits", "--results-dir", str(tmp_path / "other-encoder")])
    plain = tmp_path / "plain"
    run_command(extract_latents.main, [*extract, "--output", str(plain)])
    with pytest.raises(UserError, match="holds no encoder features for REPA; extract it again with --enc-type"):
        train_sit.main([*train[:-1], str(plain), "--enc-type", "digits", "--results-dir", str(tmp_path / "plain-run")])
    with pytest.raises(UserError, match="2x2 token grid.*--enc-grid 4"):
        coarse = tmp_path / "coarse"
        run_command(extract_latents.main, [*extract, "--output", str(coarse), "--enc-type", str(tmp_path / "vit"),
                                           "--enc-grid", "2"])
        train_sit.main([*train[:-1], str(coarse), "--enc-type", str(tmp_path / "vit"),
                        "--results-dir", str(tmp_path / "coarse-run")])

