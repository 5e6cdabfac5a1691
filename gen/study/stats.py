"""The study's comparison of a VCA model with its MHSA twin at an equal budget of steps, training seconds or
training FLOPs: each run's FID curve interpolated linearly in the budget at the largest budget every run of the
pair reached, the paired differences over seeds with a Student t interval, and a verdict that also asks the
difference to exceed the evaluation's own noise (the FID spread of one model over sampling seeds).

    point = common_budget([curve_a, curve_b])          # curves: (budgets, FIDs), as plots.metric_by_budget
    interval = paired_t_interval([-1.2, -0.8, -1.5])   # {"n", "mean", "std", "low", "high", "method"}
    verdict(interval, noise_floor=0.3)                 # "VCA better" | "MHSA better" | "not separable"
"""
import math
import statistics

import numpy as np
from scipy import stats

from ..training.curves import metric_by_budget

BUDGETS = {"step": "the same step", "train_seconds": "the same training time", "train_flops": "the same FLOPs"}
CONFIDENCE = 0.95
NOT_SEPARABLE = "not separable"


def common_budget(curves: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
    """The largest budget every curve reached, or None when some curve has no evaluation at or below it (then
    no point lies inside every curve, and none is extrapolated)."""
    if not curves or any(len(budgets) == 0 for budgets, _ in curves):
        return None
    highest = min(float(budgets[-1]) for budgets, _ in curves)
    lowest = max(float(budgets[0]) for budgets, _ in curves)
    return highest if lowest <= highest else None


def value_at(curve: tuple[np.ndarray, np.ndarray], budget: float) -> float:
    """The curve at `budget`, linear between its two neighbouring evaluations (budget within the curve)."""
    budgets, values = curve
    if not budgets[0] <= budget <= budgets[-1]:
        raise ValueError(f"budget {budget} lies outside the curve's {budgets[0]}..{budgets[-1]}")
    return float(np.interp(budget, budgets, values))


def paired_t_interval(differences: list[float], confidence: float = CONFIDENCE) -> dict:
    """Mean of the paired differences with its Student t interval (n - 1 degrees of freedom); one seed: none."""
    n = len(differences)
    mean = statistics.fmean(differences) if n else None
    std = statistics.stdev(differences) if n > 1 else None
    low = high = None
    if n > 1:
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    method = (f"paired t interval, {n} seeds, {confidence:.0%}" if n > 1 else
              "one seed: no interval" if n == 1 else "no paired seeds")
    return {"n": n, "mean": mean, "std": std, "low": low, "high": high, "method": method}


def verdict(interval: dict, noise_floor: float | None, sides=("VCA", "MHSA")) -> tuple[str, str]:
    """(word, why): a side wins only when its interval excludes 0 and the mean difference exceeds the noise floor;
    `sides` names the two (the difference is the first minus the second)."""
    if interval["low"] is None:
        return NOT_SEPARABLE, interval["method"]
    if interval["low"] <= 0 <= interval["high"]:
        return NOT_SEPARABLE, "the interval contains 0"
    if noise_floor is None:
        return NOT_SEPARABLE, "the evaluation noise floor was not measured"
    if abs(interval["mean"]) <= noise_floor:
        return NOT_SEPARABLE, f"the difference is within the noise floor ({noise_floor:.3g})"
    return f"{sides[0] if interval['mean'] < 0 else sides[1]} better", "the interval excludes 0, above the noise floor"


def compare_twins(vca_logs: dict, mhsa_logs: dict, budget: str, noise_floor: float | None,
                  metric: str = "fid", sides=("VCA", "MHSA")) -> dict:
    """VCA minus MHSA (or any two sets of runs that `sides` names) at the largest `budget` that every run of the
    pair (the seeds both have) reached."""
    seeds = sorted(set(vca_logs) & set(mhsa_logs))
    vca = {seed: metric_by_budget(vca_logs[seed], metric, budget) for seed in seeds}
    mhsa = {seed: metric_by_budget(mhsa_logs[seed], metric, budget) for seed in seeds}
    point = common_budget([*vca.values(), *mhsa.values()])
    if point is None:
        interval = paired_t_interval([])
        return {"budget": budget, "at": None, "seeds": seeds, **interval, "verdict": NOT_SEPARABLE,
                "why": "no budget that every run of the pair reached"}
    vca_values = [value_at(vca[seed], point) for seed in seeds]
    mhsa_values = [value_at(mhsa[seed], point) for seed in seeds]
    interval = paired_t_interval([a - b for a, b in zip(vca_values, mhsa_values, strict=True)])
    word, why = verdict(interval, noise_floor, sides)
    return {"budget": budget, "at": point, "seeds": seeds, "vca": vca_values, "mhsa": mhsa_values, **interval,
            "verdict": word, "why": why}
