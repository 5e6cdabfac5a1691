"""One run's figure from its training log (matplotlib's Agg canvas, no display): `curves.png`, and what it and the
study's figures (gen/study/figures.py) read from logs: metrics by step or budget, smoothing, the metric's label.

    write_curves("results/run/log.jsonl", "results/run/curves.png")          # loss, and FID once evaluated

Every PNG is written through common.files.atomic_path, so a crash never leaves half a picture under the real name.
"""
import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.files import atomic_path

from ..run_log import read_log

LOSS_SMOOTHING = 0.9  # weight of the running mean in the loss line (tensorboard's slider); raw points stay visible
MIN_POINTS_TO_SMOOTH = 50  # the EMA spans ~10 points: with fewer than five spans it lags the curve it summarises
DECADES_FOR_LOG_AXIS = 1.0  # values spanning more than 10x get a log axis, so one diverged seed hides nothing
DPI = 120


# -- reading logs ----------------------------------------------------------------------------------------------------
def metric_by_step(log: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `metric`, sorted by step; a step logged twice (a resumed run) keeps its last value."""
    by_step = {}
    for record in log:
        value = record.get(metric)
        if "step" in record and isinstance(value, (int, float)) and math.isfinite(value):
            by_step[int(record["step"])] = float(value)
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[step] for step in steps], dtype=np.float64)


def metric_by_budget(log: list[dict], metric: str, budget: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(budget values, metric values) of the lines holding both, in step order: FID against `train_seconds` or
    `train_flops` (gen/training/budget.py) as well as steps; a step logged twice keeps its last line."""
    by_step = {}
    for record in log:
        spent, value = record.get(budget), record.get(metric)
        if "step" in record and all(isinstance(v, (int, float)) and math.isfinite(v) for v in (spent, value)):
            by_step[int(record["step"])] = (float(spent), float(value))
    pairs = [by_step[step] for step in sorted(by_step)]
    return np.array([p[0] for p in pairs], dtype=np.float64), np.array([p[1] for p in pairs], dtype=np.float64)


def smooth(values: np.ndarray, weight: float = LOSS_SMOOTHING) -> np.ndarray:
    """Debiased exponential moving average (tensorboard's rule: divide by 1 - weight^k after k points), so every
    smoothed value is a weighted mean of the points so far; weight 0 returns the values."""
    smoothed, running = np.empty_like(values), 0.0
    for index, value in enumerate(values):
        running = weight * running + (1 - weight) * value
        smoothed[index] = running / (1 - weight ** (index + 1))
    return smoothed


# -- one run: curves.png ---------------------------------------------------------------------------------------------
def metric_label(log: list[dict], metric: str = "fid") -> str:
    """The metric with the feature network and sample count of its latest evaluation, e.g. "FID (digits, N=100)"."""
    records = [record for record in log if record.get(metric) is not None]
    latest = records[-1] if records else {}
    details = [latest.get("eval_features"), f"N={latest['eval_samples']}" if "eval_samples" in latest else None]
    details = ", ".join(str(detail) for detail in details if detail)
    return f"{metric.upper()} ({details})" if details else metric.upper()


def spans_decades(*arrays) -> bool:
    """Whether the positive values span more than DECADES_FOR_LOG_AXIS decades (a log axis then reads better)."""
    values = np.concatenate([np.ravel(array) for array in arrays]) if arrays else np.empty(0)
    values = values[np.isfinite(values)]
    return bool(len(values) and values.min() > 0 and np.log10(values.max() / values.min()) > DECADES_FOR_LOG_AXIS)


def curves_figure(log: list[dict]) -> Figure:
    """Loss against step (raw points, and a smoothed line when there are enough of them); a second panel with
    FID against step when any line has `fid`, named with its feature network and sample count."""
    fid_steps, fids = metric_by_step(log, "fid")
    figure = Figure(figsize=(6.4 * (1 + bool(len(fids))), 4.2), dpi=DPI, layout="constrained")
    loss_axes, *rest = figure.subplots(1, 1 + bool(len(fids)), squeeze=False)[0]
    steps, losses = metric_by_step(log, "loss")
    loss_axes.scatter(steps, losses, s=4, alpha=0.3, color="tab:blue", label="logged")
    if len(losses) >= MIN_POINTS_TO_SMOOTH:
        loss_axes.plot(steps, smooth(losses), color="tab:blue", label=f"smoothed ({LOSS_SMOOTHING}, debiased)")
        loss_axes.legend()
    elif len(losses):  # too few points to smooth honestly: join them instead
        loss_axes.plot(steps, losses, color="tab:blue", linewidth=0.8, label="logged (too few points to smooth)")
        loss_axes.legend()
    else:
        loss_axes.text(0.5, 0.5, "no loss logged yet", ha="center", va="center", transform=loss_axes.transAxes)
    if len(losses) and losses.min() > 0:
        loss_axes.set_yscale("log")
    label_axes(loss_axes, "training loss", "loss")
    for fid_axes in rest:
        fid_axes.plot(fid_steps, fids, marker="o", color="tab:red")
        for step, fid in zip(fid_steps[-1:], fids[-1:], strict=True):  # the latest value, written out
            fid_axes.annotate(f"{fid:.2f}", (step, fid), textcoords="offset points", xytext=(-4, 6), ha="right")
        if spans_decades(fids):
            fid_axes.set_yscale("log")
        name = metric_label(log)
        label_axes(fid_axes, f"{name}, lower is better", name)
    return figure


def write_curves(log_jsonl_path, out_png) -> str:
    """`curves.png` of one run from its log.jsonl."""
    return save_figure(curves_figure(read_log(log_jsonl_path)), out_png)


def save_figure(figure: Figure, out_png) -> str:
    """Write `figure` as a PNG atomically; returns the path."""
    out_png = os.fspath(out_png)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    with atomic_path(out_png) as temporary:
        FigureCanvasAgg(figure).print_png(temporary)  # the Agg canvas: no display, no pyplot state
    return out_png


def label_axes(axes, title: str, ylabel: str):
    axes.set_title(title)
    axes.set_xlabel("training step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
