"""Where the Inception weights come from: a path, $FID_INCEPTION_WEIGHTS, torch's hub cache, or a download.

torch-fidelity hosts the TF-converted FID Inception weights (the same network as pytorch-fid's
pt_inception-2015-12-05-6726825d.pth) and caches its download under torch's hub directory; we resolve the
same file ourselves so that offline runs fail with one clear message instead of a network traceback.
"""

import os

import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

from .errors import FIDError

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = tf_inception.URL_INCEPTION_V3
WEIGHTS_ENV = "FID_INCEPTION_WEIGHTS"
WEIGHTS_FLAG = "--inception-weights"


def hub_cache_paths():
    """Where torch-fidelity's download lands, and where a user may drop the pytorch-fid copy."""
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    return [os.path.join(checkpoints, name) for name in (os.path.basename(WEIGHTS_URL), WEIGHTS_FILENAME)]


def missing_weights_message(reason):
    return (f"Inception weights {WEIGHTS_FILENAME} not available ({reason}); download {WEIGHTS_URL} "
            f"(torch-fidelity's release; same weights as pytorch-fid's {WEIGHTS_FILENAME}) and pass it with "
            f"{WEIGHTS_FLAG} PATH or ${WEIGHTS_ENV}=PATH, or put it at {hub_cache_paths()[0]}")


def download_file(url, path):
    """Download with a progress bar to a temporary name, then rename (torch.hub does both)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.hub.download_url_to_file(url, path, progress=True)


def resolve_inception_weights(path=None):
    """The local path of the Inception weights: the argument, the env variable, the cache, else a download."""
    path = path or os.environ.get(WEIGHTS_ENV)
    if path:
        if not os.path.isfile(path):
            raise FIDError(missing_weights_message(f"no file at {path}"))
        return path
    for cached in hub_cache_paths():
        if os.path.isfile(cached):
            return cached
    try:
        download_file(WEIGHTS_URL, hub_cache_paths()[0])
    except Exception as error:  # any failure to download (offline, proxy, disk) ends the same way
        raise FIDError(missing_weights_message(f"download failed: {type(error).__name__}: {error}")) from None
    return hub_cache_paths()[0]


def load_inception_state_dict(path):
    """Read the weights without executing code, so a tampered file fails before torch-fidelity loads it."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated or pickled-code files alike
        raise FIDError(f"{path} is not a readable Inception state_dict ({type(error).__name__}); "
                       f"expected {WEIGHTS_FILENAME} from {WEIGHTS_URL}") from None
    if not isinstance(state_dict, dict) or "fc.weight" not in state_dict or "Mixed_6d.branch1x1.conv.weight" \
            not in state_dict:
        raise FIDError(f"{path} does not hold the FID Inception state_dict; expected {WEIGHTS_FILENAME} "
                       f"from {WEIGHTS_URL}")
    return state_dict


