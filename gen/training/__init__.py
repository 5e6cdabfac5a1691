"""Training through Accelerate, one loop for DiT and SiT (their losses: gen/diffusion/losses.py).

    entry.py       DiT's and SiT's entry points (the scripts' and train_model's, the Python one)
    loop.py        the loop: data, model, optimiser, EMA, logging, checkpoints, resumption, final samples
    checkpoint.py  checkpoints written whole with a manifest, verified when read; the resume policy
    ema.py         the EMA of the weights
    log.py         log.txt, log.jsonl and the trackers
    evaluation.py  FID while training; schedule.py the warm-up; budget.py training seconds and FLOPs
    samples.py     the EMA's sample grids and final samples.npz
"""
from ..diffusion.losses import DiffusionLoss, TransportLoss
from .entry import train_dit, train_model, train_sit
from .loop import TrainingError, train

__all__ = ["DiffusionLoss", "TrainingError", "TransportLoss", "train", "train_dit", "train_model", "train_sit"]
