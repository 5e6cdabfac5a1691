"""VCA against its MHSA twin at an equal budget: train models x seeds, then report the difference.

    python -m gen.study configs/study-digits.yaml            # trains what is missing, then writes the report
    python -m gen.study configs/study-digits.yaml --report-only

The YAML names `models`, `seeds`, the `report_dir`, the flags every run shares (`shared`, the equal budget)
and per family (`family: {DiT: {...}, SiT: {...}}`), and the `launcher`: `python` (one run after another in
a child process, here) or `accelerate` (each run through `accelerate launch` with `launch_args`, on GPUs).
A finished run (its `model.safetensors` exists) is not repeated; an interrupted one resumes from its latest
checkpoint. The report: `report.md`, `report.json` and PNG plots in `report_dir`: FID against steps, training
seconds and training FLOPs, and each VCA model against its MHSA twin at the same step, time and FLOPs (FID
curves interpolated linearly in the budget; a paired t interval over seeds; a verdict that also asks the
difference to exceed the evaluation noise floor, measured on one run's final model over `noise_floor_seeds`
sampling seeds, default 3, 0: not measured). `jobs: N` (or --jobs N) trains N runs at once, each with cpus / N
threads; `arms` trains the whole study once per set of flags and compares them (gen/study/arms.py).
"""
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

from common.cli import ArgumentParser, check_config
from common.errors import UserError
from common.files import atomic_open, check_output_folder
from common.yaml_file import read_yaml

from ..family import FAMILIES
from ..models.zoo import model_config
from ..run_log import log_path, read_log
from ..settings.data import available_cpus
from ..settings.flags import add_training_flags
from ..training.checkpoint import list_checkpoints, run_files
from ..training.curves import metric_label, save_figure
from .figures import metric_by_budgets_figure, plot_bars, plot_metric_by_steps
from .noise_floor import measure_noise_floor
from .stats import BUDGETS, compare_twins

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the scripts' folder
REQUIRED = ("models", "seeds", "report_dir", "shared")
NOISE_FLOOR_SEEDS = 3  # sampling seeds of the noise floor unless the study says `noise_floor_seeds`
NOISE_FLOOR_FILE = "noise_floor.json"  # kept beside the report: --report-only does not measure it again
BUDGET_AXES = {"step": "training step", "train_seconds": "training time (s; optimisation steps only)",
               "train_flops": "training FLOPs (3 x forward x images)"}


# -- the plan -----------------------------------------------------------------------------------------------------
def read_study(path) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"study file {path} not found; see configs/study-digits.yaml")
    study = read_yaml(path, f"study file {path}") or {}
    missing = [key for key in REQUIRED if key not in study]
    if missing:
        raise UserError(f"study file {path} lacks {missing}; it needs {list(REQUIRED)}")
    if not isinstance(study["models"], list) or not isinstance(study["seeds"], list):
        raise UserError(f"study file {path}: models and seeds must be lists, e.g. models: [DiT-Mini/2] seeds: [0, 1]")
    for name in study["models"]:
        model_config(name)  # an unknown model fails before anything trains
    check_run_flags(study, path)
    if study.get("launcher", "python") not in ("python", "accelerate"):
        raise UserError(f"study file {path}: launcher must be python or accelerate, got {study['launcher']!r}")
    if "arms" in study:
        from .arms import arm_studies, check_arms

        check_arms(study, path)
        for arm_study in arm_studies(study).values():
            check_run_flags(arm_study, path)
    seeds = study.get("noise_floor_seeds", NOISE_FLOOR_SEEDS)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds == 1 or seeds < 0:
        raise UserError(f"study file {path}: noise_floor_seeds must be 0 (not measured) or at least 2, got {seeds!r}")
    jobs = study.get("jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UserError(f"study file {path}: jobs must be a whole number of at least 1, got {jobs!r}")
    check_jobs(study, jobs, f"study file {path}: jobs")
    return study


def check_jobs(study, jobs: int, where: str):
    """Several runs at once only as child processes here: `accelerate launch`es would share GPUs and a port."""
    if jobs > 1 and study.get("launcher", "python") == "accelerate":
        raise UserError(f"{where} {jobs} with launcher accelerate: each run already spreads over the GPUs through "
                        f"accelerate launch; train them one at a time (jobs 1)")


def check_run_flags(study, path):
    """`shared` and `family` are mappings of training flags whose values fit the flags' types."""
    family = study.get("family", {})
    if not isinstance(family, dict) or not all(isinstance(v, dict) for v in family.values()):
        raise UserError(f"study file {path}: family must map DiT and SiT to flags, e.g. "
                        f"family: {{DiT: {{sampler: ddim}}}}")
    if not isinstance(study["shared"], dict):
        raise UserError(f"study file {path}: shared must map flag names to values, e.g. shared: "
                        f"{{max_steps: 600}}, got {study['shared']!r}")
    for name in {model_config(model).family for model in study["models"]}:
        parser = add_training_flags(ArgumentParser(prog=FAMILIES[name].script), name)
        check_config(parser, run_flags(study, name), f"study file {path}")


def run_flags(study, family: str) -> dict:
    """The flags of a run of `family`: `shared`, then the family's, then the arm's (gen/study/arms.py), each winning."""
    return {**study["shared"], **study.get("family", {}).get(family, {}), **study.get("arm", {})}


def run_dir(study, model: str, seed: int) -> str:
    return os.path.join(study["report_dir"], "runs", f"{model.replace('/', '-')}-seed{seed}")


def flags(values: dict) -> list[str]:
    """A dict of flag values as command-line words (True: --flag, False: --no-flag, lists: several values)."""
    words = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is False:
            words.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        elif value is not None:
            words += [flag, str(value)]
    return words


def run_command_line(study, model: str, seed: int) -> list[str]:
    family = model_config(model).family
    values = run_flags(study, family)
    arguments = ["--model", model, "--global-seed", str(seed), "--results-dir", run_dir(study, model, seed),
                 *flags(values)]
    script = os.path.join(ROOT, FAMILIES[family].script)
    if study.get("launcher", "python") == "accelerate":
        return ["accelerate", "launch", *map(str, study.get("launch_args", [])), script, *arguments]
    return [sys.executable, script, *arguments]


# -- training -----------------------------------------------------------------------------------------------------
def planned_runs(study) -> list[tuple[dict, str, int]]:
    """(study, model, seed) of every run, seed by seed: an interrupted study has whole seeds."""
    return [(study, model, seed) for seed in study["seeds"] for model in study["models"]]


def train_missing(study, jobs: int = 1):
    train_runs(planned_runs(study), jobs)


def train_runs(runs, jobs: int = 1):
    """Each run: skipped when finished, resumed when it has a checkpoint, else started afresh; `jobs` at a time
    (each then with cpus / jobs threads, its console in report_dir/runs/NAME.out)."""
    running = []
    try:
        for study, model, seed in runs:
            command = prepare_run(study, model, seed)
            if command is None:
                continue
            while len(running) >= jobs:
                finish(running.pop(first_done(running)))
            running.append(launch(study, model, seed, command, jobs))
        while running:
            finish(running.pop(first_done(running)))
    finally:  # a run failed or the study was stopped: the others stop too (SIGTERM: each keeps its checkpoints)
        for child, *_ in running:
            child.terminate()
            child.wait()


def prepare_run(study, model: str, seed: int) -> list[str] | None:
    """The run's command line (resuming its latest checkpoint), or None when it is finished."""
    folder = run_dir(study, model, seed)
    if os.path.isfile(os.path.join(folder, "model.safetensors")):
        print(f"study: {model} seed {seed} is finished ({folder})", flush=True)
        return None
    command = run_command_line(study, model, seed)
    if list_checkpoints(folder):
        command += ["--resume", "latest"]
    elif os.path.isdir(folder):
        remove_unfinished_run(folder)
    return command


def launch(study, model: str, seed: int, command: list[str], jobs: int):
    folder = run_dir(study, model, seed)
    print(f"study: training {model} seed {seed} -> {folder}", flush=True)
    if jobs == 1:
        return subprocess.Popen(command), model, seed, os.path.join(folder, "log.txt")
    environment = dict(os.environ)
    environment.setdefault("OMP_NUM_THREADS", str(max(1, available_cpus() // jobs)))
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with open(folder + ".out", "a") as console:  # the child keeps its own handle; a retry adds to it
        child = subprocess.Popen(command, env=environment, stdout=console, stderr=subprocess.STDOUT)
    return child, model, seed, folder + ".out"


def first_done(running) -> int:
    """The index of a finished child among the launched ones, waiting for one to finish."""
    while True:
        for index, (child, *_) in enumerate(running):
            if child.poll() is not None:
                return index
        time.sleep(0.5)


def finish(launched):
    child, model, seed, console = launched
    if child.wait() != 0:
        raise UserError(f"the run {model} seed {seed} failed (exit {child.returncode}); see {console}, fix it and run "
                        f"the study again: finished runs are kept")


def remove_unfinished_run(folder):
    """A run stopped before its first checkpoint has nothing to resume: it starts again in an emptied folder. Only a
    folder where a run started (its args.json) is emptied; anything else there is refused, never deleted."""
    check_output_folder(folder, "the study's run folder", own=run_files)
    shutil.rmtree(folder)


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
    from . import attention_maps

    pictures = {}
    for model in study["models"]:
        export = os.path.join(run_dir(study, model, study["seeds"][0]), "model.safetensors")
        if model_config(model).attention != "vca" or not os.path.isfile(export):
            continue
        out = os.path.join(study["report_dir"], f"attention-{model.replace('/', '-')}.png")
        sampler = {k: v for k, v in run_flags(study, model_config(model).family).items()
                   if k in ("num_sampling_steps", "sampler", "mode", "sampling_method", "cfg_scale")}
        attention_maps.main(["--ckpt", export, "--class-label", str(study.get("attention_class", 3)), "--out", out,
                             *flags(sampler)])
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


def main(argv=None):
    parser = ArgumentParser(prog="python -m gen.study", description=__doc__)
    parser.add_argument("study", help="the study's YAML file (configs/study-digits.yaml)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the runs there are")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="only these of the file's seeds")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs trained at once, each with cpus / jobs threads (default: the file's jobs, else 1; "
                             "on a CPU, as many as cores is fastest)")
    args = parser.parse_args(argv)
    study = read_study(args.study)
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    jobs = args.jobs or study.get("jobs", 1)
    check_jobs(study, jobs, "--jobs")
    if args.seeds is not None:
        unknown = sorted(set(args.seeds) - set(study["seeds"]))
        if unknown:
            raise UserError(f"--seeds {unknown} are not among the study's seeds {study['seeds']}")
        study["seeds"] = [seed for seed in study["seeds"] if seed in args.seeds]
    if "arms" in study:
        from .arms import arm_studies, planned_arm_runs, write_arms_report

        studies = arm_studies(study)
        if not args.report_only:
            train_runs(planned_arm_runs(studies), jobs)
        print(f"study: wrote {write_arms_report(study, studies)}")
        return
    if not args.report_only:
        train_missing(study, jobs)
    print(f"study: wrote {write_report(study)}")
