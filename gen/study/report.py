"""A study's report: each model's runs summarised from their logs, VCA against its MHSA twin at the same step,
time and FLOPs (gen/study/stats.py) beside the evaluation noise floor, the figures, and report.md / report.json."""
import json
import math
import os
import statistics

from common.files import atomic_open

from ..models.zoo import model_config
from ..run_log import log_path, read_log
from ..training.curves import metric_label, save_figure
from .figures import metric_by_budgets_figure, plot_bars, plot_metric_by_steps
from .noise_floor import measure_noise_floor
from .plan import NOISE_FLOOR_SEEDS, flags, run_dir, run_flags
from .stats import BUDGETS, compare_twins

NOISE_FLOOR_FILE = "noise_floor.json"  # kept beside the report: --report-only does not measure it again
BUDGET_AXES = {"step": "training step", "train_seconds": "training time (s; optimisation steps only)",
               "train_flops": "training FLOPs (3 x forward x images)"}


# -- the report ---------------------------------------------------------------------------------------------------
def summarise(study) -> dict:
    """Per model: each seed's final evaluation, images/s and parameters; the table rows of the report."""
    summary = {}
    for model in study["models"]:
        seeds = {}
        for seed in study["seeds"]:
            path = log_path(run_dir(study, model, seed))
            if not os.path.isfile(path):
                continue
            log = read_log(path)
            evaluations = [entry for entry in log if "fid" in entry]
            speeds = [entry["images_per_sec"] for entry in log if "images_per_sec" in entry]
            seeds[seed] = {"log": log, "final": evaluations[-1] if evaluations else None,
                           "images_per_sec": statistics.median(speeds) if speeds else None}
        summary[model] = {"seeds": seeds, "parameters": parameter_count(study, model)}
    return summary


def parameter_count(study, model: str) -> int | None:
    """The parameters of the model's export (what `sum(p.numel() for p in model.parameters())` counts)."""
    from safetensors import safe_open

    for seed in study["seeds"]:
        path = os.path.join(run_dir(study, model, seed), "model.safetensors")
        if os.path.isfile(path):
            with safe_open(path, framework="pt") as handle:
                return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return None


def mean_std(values):
    values = [value for value in values if value is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def final_metric(summary, model, metric) -> dict[int, float]:
    return {seed: run["final"][metric] for seed, run in summary[model]["seeds"].items()
            if run["final"] is not None and run["final"].get(metric) is not None}


def noise_floor(study) -> dict | None:
    """The FID spread of the first model's first seed over the study's sampling seeds (measured once, then read
    from report_dir); None when not asked for or the run is not finished."""
    count = study.get("noise_floor_seeds", NOISE_FLOOR_SEEDS)
    folder = run_dir(study, study["models"][0], study["seeds"][0])
    if not count or not os.path.isfile(os.path.join(folder, "model.safetensors")):
        return None
    path = os.path.join(study["report_dir"], NOISE_FLOOR_FILE)
    if os.path.isfile(path):
        with open(path) as handle:
            kept = json.load(handle)
        if kept["run"] == folder and len(kept["sampling_seeds"]) == count:
            return kept
    print(f"study: measuring the evaluation noise floor on {folder} ({count} sampling seeds)", flush=True)
    measured = measure_noise_floor(folder, list(range(count)))
    os.makedirs(study["report_dir"], exist_ok=True)
    with atomic_open(path, "w") as handle:
        json.dump(measured, handle, indent=1)
    return measured


def twin_comparisons(study, summary, floor: dict | None) -> dict:
    """{VCA model: {budget: compare_twins(...)}} for every VCA model whose MHSA twin is in the study."""
    result = {}
    for model in study["models"]:
        twin = model.removesuffix("-VCA")
        if model == twin or twin not in summary:
            continue
        logs = {name: {seed: run["log"] for seed, run in summary[name]["seeds"].items()} for name in (model, twin)}
        result[model] = {"twin": twin, **{budget: compare_twins(logs[model], logs[twin], budget,
                                                                floor["std"] if floor else None)
                                          for budget in BUDGETS}}
    return result


def twin_differences(study, summary, metric="fid") -> dict:
    """Each VCA model against its MHSA twin, paired by seed: mean and std of (VCA - MHSA)."""
    result = {}
    for model in study["models"]:
        twin = model.removesuffix("-VCA")
        if model == twin or twin not in summary:
            continue
        ours, theirs = final_metric(summary, model, metric), final_metric(summary, twin, metric)
        paired = [ours[seed] - theirs[seed] for seed in ours if seed in theirs]
        mean, std = mean_std(paired)
        result[model] = {"twin": twin, "seeds": len(paired), "mean": mean, "std": std}
    return result


def write_plots(study, summary) -> dict[str, str]:
    """FID and loss against steps (mean and spread over seeds), images/s and parameters per model."""
    folder, runs = study["report_dir"], {m: [run["log"] for run in summary[m]["seeds"].values()] for m in summary}
    fid_name = metric_label([record for logs in runs.values() for log in logs for record in log])
    pictures = {
        "fid": save_figure(metric_by_budgets_figure(runs, "fid", BUDGET_AXES, fid_name),
                           os.path.join(folder, "fid_by_budget.png")),
        "loss": plot_metric_by_steps(runs, "loss", os.path.join(folder, "loss.png"), "training loss",
                                     smoothing=0.9, log_y=True),
        # no whiskers: the seeds' speeds differ by what else ran on the machine, not by the model
        "speed": plot_bars({m: [r["images_per_sec"] for r in summary[m]["seeds"].values() if r["images_per_sec"]]
                            for m in summary}, os.path.join(folder, "images_per_sec.png"),
                           "training images/s", "training images/s (median of the log lines, mean over seeds)",
                           whiskers=False),
        "parameters": plot_bars({m: summary[m]["parameters"] or 0 for m in summary},
                                os.path.join(folder, "parameters.png"), "parameters"),
    }
    pictures.update(write_attention_maps(study))
    return {name: os.path.basename(path) for name, path in pictures.items()}


def write_attention_maps(study) -> dict[str, str]:
    """The stage-I and stage-II maps of each VCA model's first seed over a generated sample."""
    from .attention_maps import main as draw_attention_maps_command

    pictures = {}
    for model in study["models"]:
        export = os.path.join(run_dir(study, model, study["seeds"][0]), "model.safetensors")
        if model_config(model).attention != "vca" or not os.path.isfile(export):
            continue
        out = os.path.join(study["report_dir"], f"attention-{model.replace('/', '-')}.png")
        sampler = {k: v for k, v in run_flags(study, model_config(model).family).items()
                   if k in ("num_sampling_steps", "sampler", "mode", "sampling_method", "cfg_scale")}
        draw_attention_maps_command(["--ckpt", export, "--class-label", str(study.get("attention_class", 3)),
                                     "--out", out, *flags(sampler)])
        pictures[f"attention {model}"] = out
    return pictures


def format_value(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_mean(values) -> str:
    return format_value(statistics.fmean(values)) if values else "-"


def format_budget(budget: str, value) -> str:
    if value is None:
        return "-"
    return {"step": f"step {value:.0f}", "train_seconds": f"{value:.1f} s", "train_flops": f"{value:.3g} FLOPs"}[budget]


def comparison_lines(comparisons: dict, floor: dict | None) -> list[str]:
    """The table of VCA minus MHSA at the same step, time and FLOPs, with the method named."""
    methods = sorted({entry["method"] for pair in comparisons.values() for budget, entry in pair.items()
                      if budget in BUDGETS})
    floor_text = (f"{floor['std']:.3g} (std of the FID of {os.path.basename(floor['run'])}'s final model over "
                  f"{len(floor['sampling_seeds'])} sampling seeds: {', '.join(f'{f:.4g}' for f in floor['fids'])})"
                  if floor else "not measured")
    lines = ["", "VCA minus its MHSA twin at an equal budget (negative: VCA is better). Each run's FID curve is "
             "interpolated linearly in the budget at the largest budget every run of the pair reached; the 95 % "
             f"interval is a Student t interval on the per-seed paired differences ({'; '.join(methods) or 'none'}). "
             f"Evaluation noise floor: {floor_text}. Verdict: a side is better only when the interval excludes 0 "
             "and the mean difference exceeds the noise floor, else not separable.", "",
             "| VCA model | MHSA twin | budget | compared at | VCA FID | MHSA FID | difference | 95 % interval | "
             "verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, pair in comparisons.items():
        lines += [comparison_row(model, pair["twin"], budget, pair[budget]) for budget in BUDGETS]
    return lines


def comparison_row(first: str, second: str, budget: str, entry: dict) -> str:
    """A table row of compare_twins' `entry`: the pair, the budget, the FIDs, the difference, interval, verdict."""
    interval = f"{entry['low']:.2f} .. {entry['high']:.2f}" if entry["low"] is not None else entry["method"]
    return (f"| {first} | {second} | {BUDGETS[budget]} | {format_budget(budget, entry['at'])} | "
            f"{format_mean(entry.get('vca'))} | {format_mean(entry.get('mhsa'))} | {format_value(entry['mean'])} | "
            f"{interval} | {entry['verdict']} |")


def report_markdown(study, summary, differences, pictures, comparisons=None, floor=None) -> str:
    lines = [f"# Study: {study.get('name', 'VCA vs MHSA')}", "",
             f"Models {', '.join(study['models'])}; seeds {study['seeds']}; every run the same flags: "
             f"`{' '.join(flags({**study['shared'], **study.get('arm', {})}))}`.", "",
             "| model | parameters | images/s | final FID (mean +- std) | class accuracy | seeds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model, entry in summary.items():
        fid, fid_std = mean_std(final_metric(summary, model, "fid").values())
        accuracy, _ = mean_std(final_metric(summary, model, "class_accuracy").values())
        speed, _ = mean_std(run["images_per_sec"] for run in entry["seeds"].values())
        parameters = f"{entry['parameters']:,}" if entry["parameters"] else "-"
        lines.append(f"| {model} | {parameters} | {format_value(speed, 0)} | {format_value(fid)} +- "
                     f"{format_value(fid_std)} | {format_value(accuracy, 3)} | {len(entry['seeds'])} |")
    lines += ["", "VCA minus its MHSA twin (final FID, paired by seed; negative: VCA is better):", "",
              "| VCA model | MHSA twin | FID difference (mean +- std) | seeds |", "| --- | --- | --- | --- |"]
    for model, difference in differences.items():
        lines.append(f"| {model} | {difference['twin']} | {format_value(difference['mean'])} +- "
                     f"{format_value(difference['std'])} | {difference['seeds']} |")
    lines += comparison_lines(comparisons or {}, floor)
    lines += [""] + [f"![{name}]({path})" for name, path in pictures.items()]
    return "\n".join(lines) + "\n"


def write_report(study) -> str:
    summary = summarise(study)
    differences = twin_differences(study, summary)
    floor = noise_floor(study)
    comparisons = twin_comparisons(study, summary, floor)
    os.makedirs(study["report_dir"], exist_ok=True)
    pictures = write_plots(study, summary)
    plain = {model: {"parameters": entry["parameters"],
                     "seeds": {seed: {"final": run["final"], "images_per_sec": run["images_per_sec"]}
                               for seed, run in entry["seeds"].items()}} for model, entry in summary.items()}
    with atomic_open(os.path.join(study["report_dir"], "report.json"), "w") as handle:
        json.dump({"study": study, "models": plain, "vca_minus_mhsa_fid": differences,
                   "vca_minus_mhsa_at_equal_budget": comparisons, "noise_floor": floor, "pictures": pictures},
                  handle, indent=1)
    path = os.path.join(study["report_dir"], "report.md")
    with atomic_open(path, "w") as handle:
        handle.write(report_markdown(study, summary, differences, pictures, comparisons, floor))
    return path
