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
import os
import shutil
import subprocess
import time

from common.cli import ArgumentParser
from common.errors import UserError
from common.files import check_output_folder

from ..settings.data import available_cpus
from ..training.checkpoint import list_checkpoints, run_files
from .arms import write_arms_report
from .plan import arm_studies, check_jobs, planned_arm_runs, read_study, run_command_line, run_dir
from .report import write_report


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
        studies = arm_studies(study)
        if not args.report_only:
            train_runs(planned_arm_runs(studies), jobs)
        print(f"study: wrote {write_arms_report(study, studies)}")
        return
    if not args.report_only:
        train_missing(study, jobs)
    print(f"study: wrote {write_report(study)}")
