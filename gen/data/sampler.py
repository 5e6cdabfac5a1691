"""The order in which training sees the data: a deterministic function of (seed, epoch).

Each epoch is a permutation and a flip bit per item drawn from numpy's generator seeded with (seed, epoch),
cut into global batches (the incomplete last one dropped, as DiT's DistributedSampler + drop_last does);
process r takes the r-th slice of each. So the data seen at a step does not depend on the number of
processes, and resuming at (epoch, batch) replays exactly what an uninterrupted run would have seen.
"""
import numpy as np

from common.errors import InvalidValue


class EpochBatchSampler:
    """Yields this process's batches of (index, flip) keys for one epoch, from `start_batch` on."""

    def __init__(self, dataset_size: int, global_batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, random_flip: bool = True):
        if global_batch_size % world_size:
            raise InvalidValue(f"--global-batch-size {global_batch_size} is not divisible by the {world_size} "
                             f"processes; use a multiple of {world_size}")
        if dataset_size < global_batch_size:
            raise InvalidValue(f"the data set holds {dataset_size} items, fewer than one global batch of "
                             f"{global_batch_size}; lower --global-batch-size")
        self.dataset_size, self.global_batch_size = dataset_size, global_batch_size
        self.rank, self.world_size, self.seed, self.random_flip = rank, world_size, seed, random_flip
        self.batch_size = global_batch_size // world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset_size // self.global_batch_size

    def set_position(self, epoch: int, start_batch: int = 0):
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_keys(self, epoch: int) -> list[tuple[int, bool]]:
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(self.dataset_size)
        flips = rng.random(self.dataset_size) < 0.5 if self.random_flip else np.zeros(self.dataset_size, bool)
        return list(zip(order.tolist(), flips[order].tolist(), strict=True))

    def __len__(self):
        return self.steps_per_epoch - self.start_batch

    def __iter__(self):
        keys = self.epoch_keys(self.epoch)
        for batch in range(self.start_batch, self.steps_per_epoch):
            first = batch * self.global_batch_size + self.rank * self.batch_size
            yield keys[first: first + self.batch_size]
