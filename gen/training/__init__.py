"""Training through Accelerate, one loop for DiT and SiT.

    loop.py        the loop: data, model, optimiser, EMA, logging, checkpoints, resumption, final samples
    losses.py      DiT's and SiT's per-sample losses (loss_fn(model, x, y))
    checkpoint.py  checkpoints written whole with a manifest, verified when read
    ema.py         the EMA of the weights
    log.py         log.txt, log.jsonl and the trackers
    samples.py     the EMA's sample grids and final samples.npz
"""
from .loop import TrainingError, train
from .losses import DiffusionLoss, TransportLoss

__all__ = ["DiffusionLoss", "TrainingError", "TransportLoss", "train"]
