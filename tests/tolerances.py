"""How close a result must come to a number recorded on another machine (tests/fixtures/README.md).

Float32 results differ in the last bits from one CPU, thread count or torch build to the next, and the
differences grow with depth and with the number of steps, so every comparison with recorded numbers uses one
of these groups. The error is measured relative to the recorded tensor's largest magnitude: an element near
zero carries the rounding of its larger neighbours, not a relative error of its own.
Set VCA_GEN_TOLERANCE_LOG=FILE to append every observed error to FILE (to check the margins on a new host).
"""

import json
import os

import numpy as np
import torch

# Closed-form arithmetic on recorded inputs (schedules, q_sample, path plans): a handful of float32 operations.
ARITHMETIC = 1e-5
# A few network layers: one forward of the tiny official DiT/SiT, a loss or posterior from one forward.
NETWORK = 1e-5
# Long chains and ill-conditioned parametrisations: DDIM 50 steps, ODE solves over up to 27 network calls,
# noise/score predictions divided by sigma(t) near t = 0 (the fixtures README: about 1e-3 relative).
CHAIN = 1e-3
# ADM's evaluator (float64 statistics, scipy's sqrtm): FID and sFID to about 1e-5 relative across scipy builds.
FRECHET = 1e-5


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    actual, expected = _float64(actual), _float64(expected)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != recorded {tuple(expected.shape)}"
    scale = expected.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return float((actual - expected).abs().max() / scale)


def _float64(values) -> torch.Tensor:
    return values.detach().double() if torch.is_tensor(values) else torch.as_tensor(np.asarray(values, np.float64))


def assert_close_to_recorded(actual, expected, rtol: float, what: str = "") -> None:
    """Fails when relative_error(actual, expected) exceeds rtol, one of the groups above."""
    error = relative_error(actual, expected)
    log = os.environ.get("VCA_GEN_TOLERANCE_LOG")
    if log:
        with open(log, "a") as file:
            file.write(json.dumps(dict(test=os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], what=what,
                                       error=error, rtol=rtol)) + "\n")
    assert error <= rtol, f"{what}: relative error {error:.2e} above the recorded-value tolerance {rtol:.0e}"
