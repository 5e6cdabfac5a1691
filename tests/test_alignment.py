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
    from gen.export import load_pretrained

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
