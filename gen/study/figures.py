"""The study's figures of a metric over models and seeds, from their logs (matplotlib's Agg canvas, no display).

    runs = {"DiT-Mini/2": [read_log(p) for p in seed_logs], "DiT-Mini/2-VCA": [...]}  # gen.run_log.read_log
    plot_metric_by_steps(runs, "fid", "fid.png", "FID by step")   # mean line, min-max band; log axis over decades
    plot_bars({"DiT-Mini/2": [41.2, 40.8], "DiT-Mini/2-VCA": [39.0, 39.5]}, "speed.png", "images/s")

A model and its `-VCA` twin share a colour; the VCA one is dashed (bars: hatched).
"""
import textwrap

import numpy as np
from matplotlib.figure import Figure

from ..training.curves import (
    DPI,
    MIN_POINTS_TO_SMOOTH,
    label_axes,
    metric_by_budget,
    metric_by_step,
    save_figure,
    smooth,
    spans_decades,
)

VCA_SUFFIX = "-VCA"


# -- the study: models x seeds -----------------------------------------------------------------------------------------
def model_styles(names) -> dict[str, dict]:
    """{name: {"color", "linestyle", "hatch"}}: a model and its -VCA twin share a colour; VCA is dashed and hatched."""
    bases = list(dict.fromkeys(name.removesuffix(VCA_SUFFIX) for name in names))
    styles = {}
    for name in names:
        vca = name.endswith(VCA_SUFFIX)
        color = f"C{bases.index(name.removesuffix(VCA_SUFFIX)) % 10}"
        styles[name] = {"color": color, "linestyle": "--" if vca else "-", "hatch": "//" if vca else None}
    return styles


def mean_and_spread(logs: list[list[dict]], metric: str, smoothing: float = 0.0):
    """(steps, mean, low, high) over the seeds' logs: at each step, over the seeds that logged it (min and max)."""
    series = [metric_by_step(log, metric) for log in logs]
    steps = np.array(sorted(set().union(*(s.tolist() for s, _ in series))), dtype=np.int64)
    if not len(steps):
        return steps, *(np.empty(0),) * 3
    table = np.full((len(series), len(steps)), np.nan)
    for row, (seed_steps, values) in enumerate(series):
        if len(values):
            weight = smoothing if len(values) >= MIN_POINTS_TO_SMOOTH else 0.0  # too few points: shown as logged
            table[row, np.searchsorted(steps, seed_steps)] = smooth(values, weight)
    return steps, np.nanmean(table, axis=0), np.nanmin(table, axis=0), np.nanmax(table, axis=0)


def metric_by_steps_figure(runs: dict[str, list[list[dict]]], metric: str, title: str, *, smoothing: float = 0.0,
                           log_y: bool | None = None) -> Figure:
    """One mean line per model with its min-max band over seeds; `runs` maps a model name to its seeds' logs.
    log_y None: a log axis when the values span decades."""
    figure = Figure(figsize=(7.0, 4.5), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    styles, drawn = model_styles(runs), []
    for name, logs in runs.items():
        steps, mean, low, high = mean_and_spread(logs, metric, smoothing)
        drawn += [low, high]
        if not len(steps):
            continue
        style = styles[name]
        axes.plot(steps, mean, color=style["color"], linestyle=style["linestyle"], marker="o" if len(steps) < 30
                  else None, markersize=3, label=f"{name} ({len(logs)} seed{'s' * (len(logs) != 1)})")
        axes.fill_between(steps, low, high, color=style["color"], alpha=0.15, linewidth=0)
    if log_y or (log_y is None and spans_decades(*drawn)):
        axes.set_yscale("log")
    label_axes(axes, title, metric)
    if axes.lines:
        axes.legend(title="mean; band: min-max over seeds", fontsize="small", title_fontsize="small")
    return figure


def plot_metric_by_steps(runs: dict[str, list[list[dict]]], metric: str, out_png, title: str, *,
                         smoothing: float = 0.0, log_y: bool | None = None) -> str:
    """The PNG of metric_by_steps_figure (for the loss: smoothing=LOSS_SMOOTHING, log_y=True)."""
    return save_figure(metric_by_steps_figure(runs, metric, title, smoothing=smoothing, log_y=log_y), out_png)


def metric_by_budgets_figure(runs: dict[str, list[list[dict]]], metric: str, axes_labels: dict[str, str],
                             ylabel: str) -> Figure:
    """One panel per budget (`axes_labels` maps a log key such as "step" or "train_flops" to its axis label with
    units), one line per run: seeds are not averaged, since they reach different times and FLOPs at a step."""
    figure = Figure(figsize=(5.2 * len(axes_labels), 4.3), dpi=DPI, layout="constrained")
    styles = model_styles(runs)
    for axes, (budget, xlabel) in zip(figure.subplots(1, len(axes_labels), squeeze=False)[0], axes_labels.items(),
                                      strict=True):
        xs, ys = [], []
        for name, logs in runs.items():
            for index, log in enumerate(logs):
                spent, values = metric_by_budget(log, metric, budget)
                if not len(spent):
                    continue
                xs.append(spent)
                ys.append(values)
                axes.plot(spent, values, color=styles[name]["color"], linestyle=styles[name]["linestyle"],
                          marker="o", markersize=3, linewidth=1, label=name if index == 0 else None)
        if spans_decades(*xs):
            axes.set_xscale("log")
        if spans_decades(*ys):
            axes.set_yscale("log")
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(f"{ylabel} by {xlabel.split(' (')[0]}")
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(title="one line per seed", fontsize="small", title_fontsize="small")
    return figure


def bars_figure(values_by_model: dict, ylabel: str, title: str | None = None, *, whiskers: bool = True) -> Figure:
    """A bar per model: the value, or the mean of a list (one per seed) with a min-max whisker (whiskers=False:
    none, for a quantity whose spread was not measured); each labelled with as many digits as tell the bars apart,
    the title wrapped to the figure's width."""
    width = max(4.0, 1.3 * len(values_by_model) + 1.5)
    figure = Figure(figsize=(width, 4.2), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    styles = model_styles(values_by_model)
    means = [float(np.mean(values)) for values in values_by_model.values()]
    labels = distinct_labels(means)
    for position, (name, values) in enumerate(values_by_model.items()):
        values = np.atleast_1d(np.asarray(values, dtype=np.float64))
        mean = values.mean()
        whisker = [[mean - values.min()], [values.max() - mean]] if whiskers and len(values) > 1 else None
        axes.bar(position, mean, yerr=whisker, capsize=4, color=styles[name]["color"], hatch=styles[name]["hatch"],
                 edgecolor="black", linewidth=0.5)
        axes.annotate(labels[position], (position, values.max() if whisker else mean), textcoords="offset points",
                      xytext=(0, 3), ha="center", fontsize="small")
    axes.set_xticks(range(len(values_by_model)), list(values_by_model), rotation=20, ha="right")
    axes.set_ylabel(textwrap.fill(ylabel, 40))
    axes.set_title(textwrap.fill(title or ylabel, int(width * 9)))  # about 9 characters an inch at the default size
    axes.grid(axis="y", alpha=0.3)
    return figure


def distinct_labels(values: list[float]) -> list[str]:
    """The values written with the fewest significant digits (at least 3) that keep different values different:
    1,288,970 and 1,299,466 parameters, not 1.29e+06 and 1.3e+06; whole numbers with thousands separators."""
    if all(float(value).is_integer() for value in values):
        return [f"{value:,.0f}" for value in values]
    for digits in range(3, 12):
        labels = [f"{value:.{digits}g}" for value in values]
        if len(set(labels)) == len(set(values)):
            return labels
    return labels


def plot_bars(values_by_model: dict, out_png, ylabel: str, title: str | None = None, *, whiskers: bool = True) -> str:
    """The PNG of bars_figure: images/s, parameter counts, ... per model."""
    return save_figure(bars_figure(values_by_model, ylabel, title, whiskers=whiskers), out_png)
