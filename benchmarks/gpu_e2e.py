"""The end-to-end GPU check in one command: images -> latents -> training with an evaluation, stopped and
resumed -> 1,000 samples -> FID, each stage the project's own command line, timed, into one markdown table.

    PYTHONPATH=. python3 benchmarks/gpu_e2e.py --out gpu_e2e.md          # on a GPU: at most 6 minutes
    PYTHONPATH=. python3 benchmarks/gpu_e2e.py --dry-run --out /tmp/e2e.md   # the same plan on the CPU, tiny
    PYTHONPATH=. python3 benchmarks/gpu_e2e.py --extra-sample-args "--per-proc-batch-size 100"

Stages, in order: a folder of random-ish images in class subfolders (ImageFolder layout, 256 px), a randomly
initialised AutoencoderKL of the SD-VAE's shape (the --vae folder), random Inception weights
(FID_INCEPTION_WEIGHTS; the numbers are not FID, the code paths are the real ones), the reference statistics of
the images (`python -m fid ref`), their latents (extract_latents.py), DiT-S/2-VCA trained in bf16 through
`accelerate launch` with one evaluation, then resumed from its checkpoint for more steps, 1,000 DDIM-50 samples
at guidance 1.5 (sample.py; --extra-sample-args is appended to its command), their FID against the reference
(`python -m fid calc`, or the images made so far if sampling ran out of time), and last SiT-S/2-VCA trained in
one launch (its final grid samples with its ODE). From the stage times of an H200 run (docs/benchmarks.md),
about 5.5 minutes there.

Each stage is a subprocess under its own timeout (and the whole run's --budget-s); its stdout and stderr go to
<out>_logs/<stage>.log. A stage whose inputs are missing (an earlier stage failed) is skipped and says which;
the others still run. Every row is appended to --out as soon as it is measured, so a run cut short keeps what
it did. --dry-run runs the same plan on the CPU at tiny sizes (16 images of 32 px, a VAE with tiny blocks,
DiT-Mini/2-VCA and SiT-Mini/2-VCA, a few steps, 8 samples of 2 steps, FID on the digits network). Without a
GPU and without --dry-run it stops with one line and exit status 2.
"""
import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_BUDGET_S = 360  # 6 minutes for every stage together
TABLE_HEADER = "| stage | command | seconds | rate | status |\n| --- | --- | --- | --- | --- |\n"


@dataclass(frozen=True)
class Sizes:
    """What one run makes and trains: the GPU's sizes, or the dry run's tiny ones."""
    classes: int
    images_per_class: int
    image_size: int
    vae_blocks: tuple
    vae_layers_per_block: int
    vae_norm_groups: int
    model_size: str  # e.g. "S/2" -> DiT-S/2-VCA, SiT-S/2-VCA
    batch: int
    first_steps: int  # DiT's first launch stops (and checkpoints, and evaluates) here
    total_steps: int  # DiT's resumed launch goes on to here, SiT's one launch too (< 2 x first_steps)
    log_every: int
    eval_samples: int
    samples: int
    sampling_steps: int
    sample_batch: int
    workers: int

    @property
    def images(self) -> int:
        return self.classes * self.images_per_class


# Measured on an H200: ~2,450 images/s at batch 256 (100 steps in ~11 s), but each training launch spends
# ~40 s starting and ending, and an evaluation ~22 s (mostly the FID's matrix square roots on the CPU)
GPU = Sizes(classes=10, images_per_class=100, image_size=256, vae_blocks=(128, 256, 512, 512), vae_layers_per_block=2,
            vae_norm_groups=32, model_size="S/2", batch=256, first_steps=120, total_steps=200, log_every=25,
            eval_samples=100, samples=1000, sampling_steps=50, sample_batch=250, workers=4)
TINY = Sizes(classes=2, images_per_class=8, image_size=32, vae_blocks=(8, 16, 16), vae_layers_per_block=1,
             vae_norm_groups=4, model_size="Mini/2", batch=4, first_steps=2, total_steps=3, log_every=1,
             eval_samples=8, samples=8, sampling_steps=2, sample_batch=4, workers=0)


@dataclass
class Stage:
    name: str
    command: Callable[[], list[str]]  # built when the stage starts: it may look at what earlier stages left
    timeout_s: float
    inputs: list[str] = field(default_factory=list)  # paths that must exist, else the stage is skipped
    rate: Callable[[float], str] = lambda seconds: "-"  # what it did per second, from what it left


# -- the inputs: images, the VAE, the Inception weights (each made in its own process: `--make WHAT`) ----------
def make_images(folder: str, sizes: Sizes, seed: int = 0):
    """Random-ish pictures: smooth colour fields (a class's own tint) plus grain, as JPEGs in class folders."""
    import numpy as np  # noqa: PLC0415 - this process needs neither torch nor numpy otherwise
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    for label in range(sizes.classes):
        os.makedirs(os.path.join(folder, f"class{label:03d}"), exist_ok=True)
        tint = rng.uniform(0, 255, 3)
        for index in range(sizes.images_per_class):
            coarse = rng.uniform(0, 255, (8, 8, 3)) * 0.6 + tint * 0.4
            field_ = Image.fromarray(coarse.astype(np.uint8)).resize((sizes.image_size,) * 2, Image.BICUBIC)
            grain = rng.normal(0, 12, (sizes.image_size, sizes.image_size, 3))
            pixels = np.clip(np.asarray(field_, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"class{label:03d}", f"{index:05d}.jpg"), quality=90)


def make_vae(folder: str, sizes: Sizes, seed: int = 0):
    """A randomly initialised AutoencoderKL of the SD-VAE's shape (tiny blocks in a dry run), save_pretrained."""
    import torch  # noqa: PLC0415
    from diffusers.models import AutoencoderKL  # noqa: PLC0415

    torch.manual_seed(seed)
    blocks = len(sizes.vae_blocks)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
                        up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=sizes.vae_blocks,
                        layers_per_block=sizes.vae_layers_per_block, latent_channels=4,
                        norm_num_groups=sizes.vae_norm_groups, sample_size=sizes.image_size)
    vae.save_pretrained(folder)


def make_inception(path: str):
    from fid.random_weights import save_random_inception_weights  # noqa: PLC0415

    save_random_inception_weights(path, seed=0)


# -- the plan -----------------------------------------------------------------------------------------------------
class Paths:
    """Where each stage reads and writes, under the work folder."""

    def __init__(self, work: str):
        self.work = work
        self.images = os.path.join(work, "images")
        self.vae = os.path.join(work, "vae")
        self.inception = os.path.join(work, "inception-random.pth")
        self.reference = os.path.join(work, "reference.npz")
        self.latents = os.path.join(work, "latents")
        self.samples = os.path.join(work, "samples")
        self.fid = os.path.join(work, "fid")
        self.fid_cache = os.path.join(work, "fid-cache")

    def run(self, family: str) -> str:
        return os.path.join(self.work, f"train-{family}")


def plan(paths: Paths, sizes: Sizes, dry_run: bool, extra_sample_args: str) -> list[Stage]:
    """The stages in order, with their commands and timeouts (GPU seconds; the dry run's tiny sizes fit them)."""
    python, this = sys.executable, os.path.abspath(__file__)
    make = [python, this, "--work-dir", paths.work, *(["--dry-run"] if dry_run else []), "--make"]
    device = ["--device", "cpu", "--num-workers", "0", *features_flag(dry_run, "--features")] if dry_run else []
    stages = [
        Stage("make images", lambda: [*make, "images"], 30, rate=lambda s: per_second(count_images(paths.images), s)),
        Stage("make VAE", lambda: [*make, "vae"], 60),
        Stage("Inception weights", lambda: [*make, "inception"], 60),
        Stage("fid ref", lambda: [python, "-m", "fid", "ref", paths.images, "--out", paths.reference, "--image-size",
              str(sizes.image_size), "--no-progress", "--cache-dir", paths.fid_cache, *device], 60,
              [paths.images, paths.inception], lambda s: per_second(count_images(paths.images), s)),
        Stage("extract latents", lambda: [python, "extract_latents.py", "--data-path", paths.images, "--output",
              paths.latents, "--image-size", str(sizes.image_size), "--vae", paths.vae, "--num-workers",
              str(sizes.workers)], 60, [paths.images, paths.vae],
              lambda s: per_second(count_images(paths.images), s)),
    ]
    # DiT's chain to an FID first, SiT after it: a short budget cuts SiT, not the FID
    return [*stages, *training_stages("DiT", paths, sizes, dry_run),
            *sampling_stages(paths, sizes, device, extra_sample_args), *training_stages("SiT", paths, sizes, dry_run)]


def training_stages(family: str, paths: Paths, sizes: Sizes, dry_run: bool) -> list[Stage]:
    """DiT: one evaluation and a checkpoint at `first_steps`, then resumed from it to `total_steps` (below
    2 x `first_steps`, so the resumed launch does not evaluate again). SiT: one launch of `total_steps`, its final
    grid drawn with its ODE; a second evaluation and resume (~70 s on the GPU, mostly start-up) would not fit."""
    results, model = paths.run(family), f"{family}-{sizes.model_size}-VCA"
    train, inputs = train_command(family, paths, sizes, dry_run), [paths.latents, paths.vae]
    if family == "SiT":
        return [Stage(f"train {model}, {sizes.total_steps} steps", lambda: [*train, "--max-steps",
                      str(sizes.total_steps)], 100, inputs, lambda s: training_rate(results, 0, s))]
    train += evaluation_flags(paths, sizes, dry_run)
    inputs += [paths.reference, paths.inception]
    return [
        Stage(f"train {model}, {sizes.first_steps} steps + evaluation",
              lambda: [*train, "--max-steps", str(sizes.first_steps)], 120, inputs,
              lambda s: training_rate(results, 0, s)),
        Stage(f"resume {model} to {sizes.total_steps} steps",
              lambda: [*train, "--max-steps", str(sizes.total_steps), "--resume", "latest"], 90,
              [*inputs, os.path.join(results, "ckpt")], lambda s: training_rate(results, sizes.first_steps, s)),
    ]


def train_command(family: str, paths: Paths, sizes: Sizes, dry_run: bool) -> list[str]:
    """accelerate launch train_dit.py / train_sit.py on the latents in bf16, a checkpoint every `first_steps`."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--dynamo_backend", "no", "--mixed_precision", "bf16", *(["--cpu"] if dry_run else [])]
    sampler = ["--sampler", "ddim"] if family == "DiT" else ["--mode", "ODE", "--sampling-method", "euler"]
    return [*launch, f"train_{family.lower()}.py", "--model", f"{family}-{sizes.model_size}-VCA", "--latents",
            paths.latents, "--vae", paths.vae, "--image-size", str(sizes.image_size), "--num-classes",
            str(sizes.classes), "--global-batch-size", str(sizes.batch), "--num-workers", str(sizes.workers),
            "--results-dir", paths.run(family), "--ckpt-every", str(sizes.first_steps), "--log-every",
            str(sizes.log_every), "--sample-every", "0", "--log-with", "none", "--no-progress-bar", *sampler,
            "--num-sampling-steps", str(sizes.sampling_steps), "--cfg-scale", "1.5"]


def evaluation_flags(paths: Paths, sizes: Sizes, dry_run: bool) -> list[str]:
    return ["--eval-every", str(sizes.first_steps), "--eval-samples", str(sizes.eval_samples), "--eval-batch-size",
            str(sizes.eval_samples), "--eval-ref", paths.reference, *features_flag(dry_run, "--eval-features")]


def sampling_stages(paths: Paths, sizes: Sizes, device: list[str], extra_sample_args: str) -> list[Stage]:
    """sample.py's N-sample run from the resumed DiT's export, then the FID of what it made."""
    python, model = sys.executable, os.path.join(paths.run("DiT"), "model.safetensors")
    sample = [python, "sample.py", "--ckpt", model, "--sampler", "ddim", "--num-sampling-steps",
              str(sizes.sampling_steps), "--cfg-scale", "1.5", "--num-fid-samples", str(sizes.samples),
              "--per-proc-batch-size", str(sizes.sample_batch), "--class-order", "balanced", "--sample-dir",
              paths.samples, *shlex.split(extra_sample_args)]
    score = lambda: [python, "-m", "fid", "calc", samples_to_score(paths.samples), "--ref", paths.reference,  # noqa: E731
                     "--out-dir", paths.fid, "--no-progress", "--cache-dir", paths.fid_cache, *device]
    return [
        # an H200: 26 images/s with start-up (bf16, batch 50): 1,000 images in ~40 s; a timeout keeps what was made
        Stage(f"sample {sizes.samples:,} images, DDIM {sizes.sampling_steps}, guidance 1.5", lambda: sample, 100,
              [model], lambda s: per_second(count_images(paths.samples), s)),
        Stage("fid calc", score, 60, [paths.samples, paths.reference, paths.inception],
              lambda s: per_second(count_images(paths.samples), s)),
    ]


def features_flag(dry_run: bool, flag: str) -> list[str]:
    """The dry run scores with the digits network: Inception's 2048-wide matrix square roots take ~20 s each on
    a loaded 2-core CPU, which tiny sample counts do not need to learn that the plan runs."""
    return [flag, "digits"] if dry_run else []


def samples_to_score(sample_dir: str) -> str:
    """samples.npz when sampling finished, else the folder of the images it made before its timeout."""
    packed = os.path.join(sample_dir, "samples.npz")
    return packed if os.path.exists(packed) else sample_dir


# -- rates ----------------------------------------------------------------------------------------------------------
def count_images(folder: str) -> int:
    if not os.path.isdir(folder):
        return 0
    return sum(name.endswith((".png", ".jpg")) for _, _, names in os.walk(folder) for name in names)


def per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:,.1f} images/s ({count:,} images)" if count else "-"


def training_rate(results_dir: str, after_step: int, seconds: float) -> str:
    """The loop's own images/s and steps/s (log.jsonl's last line past `after_step`), and steps per wall second."""
    try:
        with open(os.path.join(results_dir, "log.jsonl")) as log:
            lines = [entry for entry in map(json.loads, log) if "images_per_sec" in entry]
    except (OSError, ValueError):
        return "-"
    lines = [entry for entry in lines if entry.get("step", 0) > after_step]
    if not lines:
        return "-"
    last = lines[-1]
    return (f"{last['images_per_sec']:,.0f} images/s, {last['steps_per_sec']:.2f} steps/s (log); "
            f"{(last['step'] - after_step) / seconds:.2f} steps/s with start-up")


# -- running a stage ------------------------------------------------------------------------------------------------
def run_stage(stage: Stage, log_path: str, timeout_s: float, env: dict, work: str) -> tuple[float, str, str]:
    """Run one stage's command (in the repository root, its own process group), output to its log; returns
    (seconds, the command as text, status)."""
    missing = [path for path in stage.inputs if not os.path.exists(path)]
    if missing:
        return 0.0, "-", f"skipped: {missing[0]} is missing (an earlier stage failed)"
    command = stage.command()
    started = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own group: a timeout ends what it started too
        try:
            status = "ok" if process.wait(timeout=timeout_s) == 0 else None
        except subprocess.TimeoutExpired:
            status = f"failed: timed out after {timeout_s:.0f} s"
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.wait()
    seconds = time.monotonic() - started
    if status is None:
        status = f"failed: exit status {process.returncode}: {last_line(log_path)}"
    return seconds, shlex.join(shorten(command, work)), status


def shorten(command: list[str], work: str) -> list[str]:
    """The command as a reader would type it: no interpreter path, the work folder as $WORK."""
    words = ["python" if word == sys.executable else word for word in command]
    return [word.replace(work, "$WORK").replace(ROOT + os.sep, "") for word in words]


def last_line(log_path: str) -> str:
    with open(log_path, errors="replace") as log:
        lines = [line.strip() for line in log if line.strip()]
    return lines[-1][:200].replace("|", "/") if lines else "(no output)"


def stage_environment(paths: Paths, dry_run: bool) -> dict:
    """This checkout first on the path, the stand-in Inception weights, a private feature cache, no hub access."""
    env = dict(os.environ, FID_INCEPTION_WEIGHTS=paths.inception, FID_CACHE_DIR=paths.fid_cache,
               HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    if dry_run:  # tiny models gain nothing from threads on a shared CPU
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


# -- the report -------------------------------------------------------------------------------------------------------
def append(path: str, text: str):
    """Add to the report at once (a run cut short keeps it) and show it."""
    with open(path, "a") as out:
        out.write(text)
    print(text, end="", flush=True)


def row(stage: str, command: str, seconds: float, rate: str, status: str) -> str:
    cells = [stage, f"`{command}`" if command != "-" else "-", f"{seconds:.1f}", rate, status]
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |\n"


def run_plan(stages: list[Stage], out: str, logs: str, env: dict, budget_s: float, work: str):
    """Every stage in turn under min(its timeout, what the budget left), a row each as soon as it is done."""
    deadline = time.monotonic() + budget_s
    for number, stage in enumerate(stages, 1):
        timeout = min(stage.timeout_s, deadline - time.monotonic())
        if timeout < 5:
            append(out, row(stage.name, "-", 0.0, "-", "skipped: the run's time budget is spent"))
            continue
        log_path = os.path.join(logs, f"{number:02d}-{slug(stage.name)}.log")
        try:
            seconds, command, status = run_stage(stage, log_path, timeout, env, work)
        except Exception as error:  # the next stage may still start
            seconds, command, status = 0.0, "-", f"failed: could not start: {type(error).__name__}: {error}"
        except (KeyboardInterrupt, SystemExit):  # stopped from outside: the stage's processes are ended already
            append(out, row(stage.name, "-", 0.0, "-", "failed: the run was stopped during this stage"))
            raise
        rate = stage.rate(seconds) if seconds > 0 else "-"
        append(out, row(stage.name, command, seconds, rate, status))


def slug(name: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())[:40]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_e2e.md", help="the markdown file to write (logs in <out>_logs/)")
    parser.add_argument("--work-dir", default=None, help="where the images, runs and samples go (default: a "
                        "temporary folder, removed at the end)")
    parser.add_argument("--extra-sample-args", default="", help="appended to sample.py's command, e.g. "
                        "'--per-proc-batch-size 100'")
    parser.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S, help="the whole run's time limit")
    parser.add_argument("--dry-run", action="store_true", help="the same plan on the CPU at tiny sizes")
    parser.add_argument("--make", choices=["images", "vae", "inception"], default=None,
                        help="(used by the stages) make one input in --work-dir and stop")
    return parser.parse_args(argv)


def make_input(what: str, paths: Paths, sizes: Sizes):
    {"images": lambda: make_images(paths.images, sizes), "vae": lambda: make_vae(paths.vae, sizes),
     "inception": lambda: make_inception(paths.inception)}[what]()


def require_gpu():
    import torch  # noqa: PLC0415 - only here: the stages import it in their own processes

    if not torch.cuda.is_available():
        print("gpu_e2e.py: no CUDA GPU is visible; run it on a machine with one (or try --dry-run)", file=sys.stderr)
        sys.exit(2)


def stop_on_sigterm():
    """`timeout` sends SIGTERM: end the running stage's process group and keep the rows written (SystemExit)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv=None):
    args = parse_args(argv)
    sizes = TINY if args.dry_run else GPU
    if args.make:
        make_input(args.make, Paths(os.path.abspath(args.work_dir)), sizes)
        return
    if not args.dry_run:
        require_gpu()
    stop_on_sigterm()
    out = os.path.abspath(args.out)
    logs = f"{os.path.splitext(out)[0]}_logs"
    os.makedirs(logs, exist_ok=True)
    open(out, "w").close()
    with tempfile.TemporaryDirectory(prefix="gpu_e2e_") as scratch:
        paths = Paths(os.path.abspath(args.work_dir or scratch))
        os.makedirs(paths.work, exist_ok=True)
        command = shlex.join(["python", "benchmarks/gpu_e2e.py", *(sys.argv[1:] if argv is None else argv)])
        append(out, f"# End-to-end check{' (dry run: CPU, tiny sizes)' if args.dry_run else ''}\n\n"
                    f"{datetime.datetime.now():%Y-%m-%d %H:%M}, `{command}`; work folder `{paths.work}`, logs in "
                    f"`{logs}`, time budget {args.budget_s:.0f} s\n\n{TABLE_HEADER}")
        started = time.monotonic()
        run_plan(plan(paths, sizes, args.dry_run, args.extra_sample_args), out, logs,
                 stage_environment(paths, args.dry_run), args.budget_s, paths.work)
    print(f"\n{time.monotonic() - started:.1f} s in all; wrote {out}")


if __name__ == "__main__":
    main()
