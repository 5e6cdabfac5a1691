"""The whole GPU report in one command: the benchmarks of this folder in turn, into one markdown file.

    PYTHONPATH=. python benchmarks/gpu_report.py --out gpu_report.md    # on a GPU: at most 8 minutes
    PYTHONPATH=. python benchmarks/gpu_report.py --dry-run --out /tmp/dry.md   # the same on the CPU, tiny

Sections, most important first, all in bf16: the training step, eager, of DiT-S/2 and DiT-XL/2 at 256 and
512 px beside their VCA twins, with MFU (train_step.py); the GPU profile of a DiT-S/2(-VCA) step, kernel time
and launches by group, with chrome traces beside the report (profile_step.py); one attention module, VCA
against flash MHSA at N = 256 ... 16,384 (attention.py); the compiled DiT-S/2 step at 256 px; sampling
images/s at 256 px (with the Inception row) and 512 px (sample.py); last the compiled DiT-XL/2 step at
256 px, whose compilation may take minutes, in the time the others left. --vca-kernels (default: triton
torch) gives VCA rows per kernel choice; compiled rows use the first choice only.

Each section runs in its own process (forked from a server that imported torch and never touched CUDA)
under its own time budget, so a hung compile or a broken CUDA context ends there; every line it prints goes
into the file at once, and the time it took is written after it. The budgets add up to less than 8 minutes
on one H100, and --budget-s caps the whole run. The sections' stderr goes to the .log file beside the
report. --dry-run runs the same plan through the same argument parsing on the CPU at tiny shapes (Mini
models, 32-64 px, batch 1-2, one thread, one round; torch.compile skipped, the compiled rows saying so;
Triton through its interpreter; budgets x4), so a mistake shows up there and not on a GPU. Without a GPU
and without --dry-run it stops with one line and exit status 2.
"""
import argparse
import datetime
import importlib.util
import multiprocessing
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]  # the benchmarks' own imports (bench_common, train_step, ...) and this checkout's gen
# What the sections import, loaded once in the server they fork from; "__main__" (this file) first sets sys.path.
PRELOAD = ["__main__", "torch", "bench_common", "train_step", "profile_step", "attention", "fid_features",
           "gen.sampling"]
TOTAL_BUDGET_S = 470  # 8 minutes, with room for the report's own start


@dataclass
class Section:
    title: str
    script: str  # benchmarks/<script>.py
    argv: list[str]
    budget_s: float
    tiny: list[str]  # --dry-run: appended to argv, the later value of a flag wins


def plan(vca_kernels: list[str], peak_tflops, trace: str) -> list[Section]:
    """The report's sections with their arguments on a GPU and their tiny CPU overrides."""
    kernels, first = ["--vca-kernels", *vca_kernels], ["--vca-kernels", vca_kernels[0]]
    peak = ["--peak-tflops", str(peak_tflops)] if peak_tflops else []
    tiny_train = ["--models", "DiT-Mini/2", "--image-sizes", "32", "--batch-size", "1", "--rounds", "1",
                  "--threads", "1", "--compile-backend", "none", "--no-memory"]
    tiny_sample = ["--batch-size", "1", "--num-steps", "2", "--ode-steps", "2", "--rounds", "1", "--threads", "1",
                   "--model-size", "Mini"]
    return [
        Section("Training step, eager", "train_step", ["--models", "DiT-S/2", "DiT-XL/2", "--image-sizes", "256",
                "512", "--modes", "eager", *kernels, "--rounds", "5", *peak], 80, tiny_train),
        Section("GPU profile of a training step", "profile_step", ["--models", "DiT-S/2", "DiT-S/2-VCA",
                "--image-size", "256", "--repeats", "3", *kernels, "--trace", trace], 40,
                ["--models", "DiT-Mini/2", "DiT-Mini/2-VCA", "--image-size", "32", "--batch-size", "1",
                 "--repeats", "1", "--threads", "1"]),
        Section("Attention module, VCA vs flash MHSA", "attention", ["--sides", "16", "32", "64", "128",
                "--skip-reference", *kernels, "--repeats", "5"], 35,
                ["--sides", "4", "--tokens-per-batch", "16", "--repeats", "1", "--threads", "1"]),
        Section("Training step, compiled, DiT-S/2", "train_step", ["--models", "DiT-S/2", "--image-sizes", "256",
                "--modes", "compiled", *first, "--rounds", "5", *peak], 120, tiny_train),
        Section("Sampling at 256 px, and Inception features", "sample", ["--image-size", "256", "--rounds", "2"], 40,
                [*tiny_sample, "--image-size", "32"]),
        Section("Sampling at 512 px", "sample", ["--image-size", "512", "--num-steps", "50", "--ode-steps", "10",
                "--rounds", "2", "--no-inception"], 30, [*tiny_sample, "--image-size", "64"]),
        # last, with what the others left: compiling DiT-XL/2 and its twin may take minutes
        Section("Training step, compiled, DiT-XL/2", "train_step", ["--models", "DiT-XL/2", "--image-sizes", "256",
                "--modes", "compiled", *first, "--rounds", "5", *peak], TOTAL_BUDGET_S, tiny_train),
    ]


def append(path: str, text: str, echo: bool = True):
    """Add to the report at once (a run cut short keeps it) and show it."""
    with open(path, "a") as out:
        out.write(text)
    if echo:
        print(text, end="", flush=True)


def _run_benchmark(script: str, argv: list[str], out: str, log: str):
    """In the section's process: main() of benchmarks/<script>.py, printing into the report, stderr to the log."""
    os.setsid()  # its own process group, so what it starts (compile workers) ends with it
    for fd, path in ((1, out), (2, log)):
        target = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(target, fd)  # also what C code and child processes write
        os.close(target)
    sys.stdout.reconfigure(line_buffering=True)
    # by path: the repository root has a sample.py of its own
    spec = importlib.util.spec_from_file_location(f"benchmark_{script}", os.path.join(HERE, f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def run_section(section: Section, argv: list[str], out: str, log: str, budget: float) -> str:
    """Run one benchmark in its own process for at most `budget` seconds, printing straight into `out`; returns
    the line said after it (time taken, and why it stopped early if it did)."""
    with open(log, "a") as errors:
        errors.write(f"\n==== {section.title}: {shlex.join(argv)}\n")
    started, start_size = time.monotonic(), os.path.getsize(out)
    # forked from a server that imported torch but never touched CUDA: a fresh process in milliseconds
    child = multiprocessing.get_context("forkserver").Process(target=_run_benchmark,
                                                               args=(section.script, argv, out, log))
    child.start()  # the first one waits for the server's imports: they count against its budget
    child.join(max(0.0, budget - (time.monotonic() - started)))
    stopped = child.is_alive()
    try:
        os.killpg(child.pid, signal.SIGKILL)  # the section if over its budget, and what it left running
    except (ProcessLookupError, PermissionError):
        pass
    child.join()
    with open(out) as report:
        report.seek(start_size)
        print(report.read(), end="", flush=True)
    took = f"section took {time.monotonic() - started:.1f} s of its {budget:.0f} s budget"
    if stopped:
        return f"{took}; stopped at its budget, the rows above are what it measured"
    if child.exitcode:
        return f"{took}; failed with exit status {child.exitcode}: {_last_line(log)}"
    return took


def _last_line(log: str) -> str:
    with open(log) as errors:
        lines = [line.strip() for line in errors if line.strip()]
    return lines[-1][:300] if lines else "(no message)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_report.md", help="the markdown file to write")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, if not known by name")
    parser.add_argument("--vca-kernels", nargs="+", choices=["auto", "torch", "triton"], default=["triton", "torch"],
                        help="VCA rows per kernel choice (compiled rows: the first)")
    parser.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S, help="the whole run's time limit")
    parser.add_argument("--dry-run", action="store_true", help="the whole report on the CPU at tiny shapes")
    args = parser.parse_args(argv)
    if not args.dry_run:
        import torch  # noqa: PLC0415 - only here: the sections import it in their own processes

        if not torch.cuda.is_available():
            print("gpu_report.py: no CUDA GPU is visible; run it on a machine with one (or try --dry-run)",
                  file=sys.stderr)
            sys.exit(2)
    if args.dry_run:  # the fused VCA kernels through Triton's interpreter; read when the sections import Triton
        os.environ["TRITON_INTERPRET"] = "1"
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    stem = os.path.splitext(out)[0]
    log, trace = f"{stem}.log", os.path.join(f"{stem}_traces", "profile.json.gz")
    sections = plan(args.vca_kernels, args.peak_tflops, trace)
    multiprocessing.set_forkserver_preload(PRELOAD)
    for path in (out, log):
        open(path, "w").close()
    command = shlex.join(["python", "benchmarks/gpu_report.py", *sys.argv[1:]])
    append(out, f"# GPU report{' (dry run: CPU, tiny shapes)' if args.dry_run else ''}\n\n"
                f"{datetime.datetime.now():%Y-%m-%d %H:%M}, `{command}`\n\nTime budget {args.budget_s:.0f} s in all; "
                + ", ".join(f"{s.title}: {min(s.budget_s, args.budget_s):.0f} s" for s in sections[:-1])
                + f", {sections[-1].title}: what is left\n")
    deadline = time.monotonic() + args.budget_s * (4 if args.dry_run else 1)
    for section in sections:
        argv = section.argv + (section.tiny if args.dry_run else [])
        append(out, f"\n## {section.title}\n\n`python benchmarks/{section.script}.py {shlex.join(argv)}`\n")
        # a dry run's budgets are the GPU's times 4: the CPU may be loaded, and Triton runs interpreted
        budget = min(section.budget_s * (4 if args.dry_run else 1), deadline - time.monotonic())
        if budget < 5:
            append(out, "\nskipped: the report's time budget is spent\n")
            continue
        try:
            append(out, f"\n{run_section(section, argv, out, log, budget)}\n")
        except Exception as error:  # the next section may still start
            append(out, f"\nsection failed to start: {type(error).__name__}: {error}\n")
    print(f"wrote {out} (stderr of the sections: {log})")


if __name__ == "__main__":
    main()
