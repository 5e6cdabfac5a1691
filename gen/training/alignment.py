"""REPA's representation alignment (Yu et al. 2025, sihyun-yu/REPA loss.py): the network's hidden states after block
`encoder_depth`, through its projector (gen.models.dit: `model.projector`), are pulled towards a frozen encoder's
patch features of the clean images by negative cosine similarity, per token, weighted by `proj_coeff` (REPA: 0.5):

    loss = denoising loss + proj_coeff * mean over tokens of -cos(projected hidden state, encoder feature)

tests/test_alignment.py holds `alignment_loss` to REPA's SILoss on fixed features."""
import torch
import torch.nn.functional as F


def alignment_loss(projected, features):
    """Per sample: the mean over tokens of -cos(projected, features); both [B, N, dim]."""
    return -(F.normalize(projected, dim=-1) * F.normalize(features, dim=-1)).sum(dim=-1).mean(dim=-1)


def unwrapped(model):
    """The network inside DDP's and torch.compile's wrappers, where the forward left its projected tokens."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


class AlignedLoss:
    """`loss_fn` (the family's denoising loss) plus REPA's alignment of the model's projected tokens with the
    encoder's features; called as every loss is, with the batch's clean `images` (pixels in [-1, 1]) for
    `encoder(images, grid)`, or its `features` [B, grid * grid, dim] stored beside the latents (encoder None)."""

    def __init__(self, loss_fn, encoder=None, proj_coeff: float = 0.5):
        self.loss_fn, self.encoder, self.proj_coeff = loss_fn, encoder, proj_coeff

    def __call__(self, model, x, y, images=None, features=None):
        if features is None and (images is None or self.encoder is None):
            raise ValueError("REPA's alignment needs the batch's features, or its images and the encoder: the "
                             "training loop passes them")
        denoising = self.loss_fn(model, x, y)
        network = unwrapped(model)
        if features is None:
            with torch.no_grad():
                features = self.encoder(images, network.x_embedder.grid_size[0])
        return denoising + self.proj_coeff * alignment_loss(network.aligned_tokens,
                                                            features.to(network.aligned_tokens.dtype))
