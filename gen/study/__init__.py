"""The evidence: VCA models against their MHSA twins at an equal budget, and the tools that read them.

    runs.py            `python -m gen.study STUDY.yaml`: train models x seeds (and arms), then write the report
    arms.py            the whole study once per set of flags, each arm compared with the first
    stats.py           paired t intervals and verdicts at the same step, time and FLOPs
    noise_floor.py     one model's FID spread over sampling seeds: the smallest difference worth a verdict
    figures.py         the report's figures over models and seeds
    attention_maps.py  `python -m gen.study.attention_maps`: VCA's stage-I and stage-II maps over a sample
    demo.py            `python -m gen.study.demo`: `make demo`'s digits scored
"""
from .runs import check_run_flags, main, read_study, run_command_line

__all__ = ["check_run_flags", "main", "read_study", "run_command_line"]
