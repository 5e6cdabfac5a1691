"""A study's arms: the same models and seeds trained once per arm, an arm being flags on top of `shared`, to say what
each part of a recipe buys. In the study file (the first arm is the baseline the others are compared with):

    arms:
      vanilla: {}
      lognormal: {weighting: lognormal}
      repa: {enc_type: digits, encoder_depth: 2}

Each arm is a study of its own in report_dir/ARM (its runs, its VCA-against-MHSA report and noise floor);
report_dir/report.md compares each arm with the baseline, model by model, at the same step, training time and
FLOPs, with the same paired intervals and verdicts as the twins (gen.study.stats).
"""
import json
import os

from common.files import atomic_open

from ..training.curves import metric_label, save_figure
from .figures import metric_by_budgets_figure
from .report import (
    BUDGET_AXES,
    comparison_row,
    final_metric,
    format_value,
    mean_std,
    noise_floor,
    summarise,
    write_report,
)
from .stats import BUDGETS, compare_twins


def arm_comparisons(studies: dict[str, dict], summaries: dict, floors: dict) -> dict:
    """{model: {arm: {budget: arm minus baseline}}} for each arm after the first; the noise floor: the larger of
    the two arms' (None when either is unmeasured)."""
    baseline, *others = studies
    result = {}
    for model in studies[baseline]["models"]:
        logs = {arm: {seed: run["log"] for seed, run in summaries[arm][model]["seeds"].items()} for arm in studies}
        result[model] = {}
        for arm in others:
            measured = [floors[name]["std"] for name in (arm, baseline) if floors.get(name)]
            floor = max(measured) if len(measured) == 2 else None
            result[model][arm] = {budget: compare_twins(logs[arm], logs[baseline], budget, floor,
                                                        sides=(arm, baseline)) for budget in BUDGETS}
    return result


def comparison_table(baseline: str, comparisons: dict) -> list[str]:
    lines = [f"Each arm minus `{baseline}`, model by model, at an equal budget (FID; negative: the arm is better). "
             "Curves interpolated linearly in the budget at the largest budget every run of the pair reached; a "
             "Student t interval on the per-seed paired differences; the noise floor is the larger of the two arms'. "
             "Verdict: a side is better only when the interval excludes 0 and the difference exceeds the floor.", "",
             f"| model | arm | budget | compared at | arm FID | {baseline} FID | difference | 95 % interval | "
             "verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    return lines + [comparison_row(model, arm, budget, entry) for model, arms in comparisons.items()
                    for arm, budgets in arms.items() for budget, entry in budgets.items()]


def final_table(studies: dict[str, dict], summaries: dict) -> list[str]:
    lines = ["| model | " + " | ".join(studies) + " |", "| --- |" + " --- |" * len(studies)]
    for model in next(iter(studies.values()))["models"]:
        cells = []
        for arm in studies:
            values = final_metric(summaries[arm], model, "fid")
            mean, std = mean_std(values.values())
            cells.append(f"{format_value(mean)} +- {format_value(std)} ({len(values)})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def write_arms_report(study, studies: dict[str, dict]) -> str:
    """Each arm's own report, then report_dir/report.md and report.json comparing the arms; returns the .md path."""
    summaries, floors = {}, {}
    for arm, arm_study in studies.items():
        write_report(arm_study)
        summaries[arm], floors[arm] = summarise(arm_study), noise_floor(arm_study)
    comparisons = arm_comparisons(studies, summaries, floors)
    runs = {f"{model} [{arm}]": [run["log"] for run in summaries[arm][model]["seeds"].values()]
            for arm in studies for model in studies[arm]["models"]}
    folder = study["report_dir"]
    fid_name = metric_label([record for logs in runs.values() for log in logs for record in log])
    figure = save_figure(metric_by_budgets_figure(runs, "fid", BUDGET_AXES, fid_name),
                         os.path.join(folder, "fid_by_budget.png"))
    baseline = next(iter(studies))
    lines = [f"# Study: {study.get('name', 'arms')}", "",
             f"Models {', '.join(study['models'])}; seeds {study['seeds']}; shared flags and, per arm, its own "
             f"(each arm's report: [ARM/report.md](ARM/report.md)):", ""]
    lines += [f"- `{arm}`: {', '.join(f'`{key}: {value}`' for key, value in values.items()) or 'the shared flags'}"
              for arm, values in study["arms"].items()]
    lines += ["", "Final FID, mean +- std over seeds (seeds):", "", *final_table(studies, summaries), "",
              *comparison_table(baseline, comparisons), "", f"![FID by budget]({os.path.basename(figure)})"]
    with atomic_open(os.path.join(folder, "report.json"), "w") as handle:
        finals = {arm: {model: final_metric(summaries[arm], model, "fid") for model in summaries[arm]}
                  for arm in studies}
        json.dump({"study": study, "final_fid": finals, "arm_minus_baseline": comparisons, "noise_floors": floors,
                   "picture": os.path.basename(figure)}, handle, indent=1)
    path = os.path.join(folder, "report.md")
    with atomic_open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
