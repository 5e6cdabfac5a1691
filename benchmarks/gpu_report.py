"""The whole GPU table in one command: every GPU benchmark of this folder, run in turn, in one markdown file.

    python benchmarks/gpu_report.py                       # writes gpu_report.md and prints it
    python benchmarks/gpu_report.py --out docs/gpu.md --peak-tflops 989

Contents, all in bf16: one attention module, VCA against flash MHSA at N = 256 ... 16,384 (attention.py);
the training step with images/s and MFU for DiT-S/2, DiT-S/2-VCA and DiT-XL/2 (and its VCA twin) at 256 and
512 px, compiled (train_step.py); sampling images/s with the paper's step counts and Inception images/s
(sample.py, fid_features.py). Without a GPU it stops with one line and exit status 2.
"""
import argparse
import contextlib
import importlib.util
import io
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from anywhere
sys.path.insert(0, HERE)


def benchmark_main(name):
    """main() of benchmarks/<name>.py, loaded by path: the repository root has a sample.py of its own."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def sections(peak_tflops):
    """(title, benchmark main, its argv): the same functions the single benchmarks run."""
    attention, train_step, sample, fid_features = (benchmark_main(name) for name in
                                                   ("attention", "train_step", "sample", "fid_features"))
    peak = ["--peak-tflops", str(peak_tflops)] if peak_tflops else []
    return [
        ("Attention module, VCA vs flash MHSA", attention, ["--sides", "16", "32", "64", "128",
                                                                 "--skip-reference"]),
        ("Training step, compiled", train_step, ["--with-xl", "--compile", "--image-sizes", "256", "512"]
         + peak),
        ("Sampling at 256 px", sample, ["--image-size", "256"]),
        ("Sampling at 512 px", sample, ["--image-size", "512"]),
        ("Inception (FID features)", fid_features, []),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_report.md", help="the markdown file to write")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, if not known by name")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_report.py: no CUDA GPU is visible; run it on a machine with one", file=sys.stderr)
        sys.exit(2)
    report = []
    for title, benchmark, benchmark_argv in sections(args.peak_tflops):
        section = io.StringIO()
        with contextlib.redirect_stdout(section):
            benchmark(benchmark_argv)
        report.append(f"## {title}\n{section.getvalue()}")
        print(report[-1], flush=True)  # each section as it finishes: the whole run takes a while
    with open(args.out, "w") as out:
        out.write("\n".join(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
