"""What a training run reports: lines on stdout (above the progress bar) and in `log.txt`, metrics in `log.jsonl`
and in Accelerate's trackers (tensorboard when installed), and sample grids in the trackers that show images."""
import os
import resource
import sys
import time

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..run_log import append_record, log_path


class TrainingLog:
    """Writes on the main process only; `warning` prints on every process (each reads its own data)."""

    def __init__(self, accelerator, results_dir):
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        self.text_path = os.path.join(results_dir, "log.txt")
        self.jsonl_path = log_path(results_dir)

    def info(self, message: str):
        if not self.is_main:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        write_line(line, sys.stdout)
        with open(self.text_path, "a", errors="backslashreplace") as file:  # paths of non-UTF-8 bytes
            file.write(line + "\n")

    def warning(self, message: str):
        if self.is_main:
            self.info(f"warning: {message}")
        else:
            write_line(f"[process {self.accelerator.process_index}] warning: {message}", sys.stderr)

    def metrics(self, step: int, values: dict):
        """One line of `values` for humans, one JSON object per line for programs, and the trackers."""
        if not self.is_main:
            return
        shown = " ".join(f"{key}={format_value(value)}" for key, value in values.items())
        self.info(f"step {step:07d} {shown}")
        append_record(self.jsonl_path, {"step": step, **values})
        self.accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def image(self, step: int, tag: str, png_path):
        """A PNG to every tracker that shows images (IMAGE_LOGGERS); the others keep their metrics only."""
        if not self.is_main:
            return
        with Image.open(png_path) as image:
            pixels = np.asarray(image.convert("RGB"))
        for tracker in self.accelerator.trackers:
            if tracker.name in IMAGE_LOGGERS:
                IMAGE_LOGGERS[tracker.name](tracker, tag, pixels, png_path, step)


# Accelerate's trackers take a picture each their own way (one image, a list, a batch, or a file)
IMAGE_LOGGERS = {
    "tensorboard": lambda t, tag, pixels, path, step: t.log_images({tag: pixels[None]}, step=step, dataformats="NHWC"),
    "wandb": lambda t, tag, pixels, path, step: t.log_images({tag: [pixels]}, step=step),
    "swanlab": lambda t, tag, pixels, path, step: t.log_images({tag: [pixels]}, step=step),
    "aim": lambda t, tag, pixels, path, step: t.log_images({tag: pixels}, step=step),
    "clearml": lambda t, tag, pixels, path, step: t.log_images({tag: pixels}, step=step),
    "mlflow": lambda t, tag, pixels, path, step: t.log_artifact(path, artifact_path=f"{tag}/step_{step:07d}"),
}


def write_line(line: str, file):
    """`line` above any tqdm bar (printing through a bar garbles both), flushed at once."""
    tqdm.write(line, file=file)
    file.flush()


def format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated by tensors, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB
