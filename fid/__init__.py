"""FID-50K pipeline: ADM's evaluator metrics on torch-fidelity's TF-compatible Inception.

    python -m fid calc samples.npz --ref VIRTUAL_imagenet256_labeled.npz
    python -m fid ref /data/imagenet/train --out imagenet256_ref.npz --image-size 256
    python -m fid calc samples.npz --features digits   # the built-in digits: fid.digits
"""

from . import digits
from .digits_network import DigitsFeatures
from .errors import FIDError
from .features import InceptionFeatures
from .manifold import precision_recall
from .metrics import frechet_distance, inception_score
from .pipeline import compute_metrics
from .reference import load_reference, make_reference

__all__ = ["DigitsFeatures", "FIDError", "InceptionFeatures", "compute_metrics", "digits", "frechet_distance",
           "inception_score", "load_reference", "make_reference", "precision_recall"]
