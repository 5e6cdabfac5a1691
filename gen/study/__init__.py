"""The evidence: VCA models against their MHSA twins at an equal budget, and the tools that read them.

    runs.py            `python -m gen.study STUDY.yaml`: train what is missing (several at once), then report
    plan.py            the study file read and checked; each run's folder and command line; the arms' studies
    report.py          the runs summarised, VCA against its MHSA twin, report.md and report.json
    arms.py            the arms' report: the whole study once per set of flags, each arm against the first
    stats.py           paired t intervals and verdicts at the same step, time and FLOPs
    noise_floor.py     one model's FID spread over sampling seeds: the smallest difference worth a verdict
    figures.py         the report's figures over models and seeds
    attention_maps.py  `python -m gen.study.attention_maps`: VCA's stage-I and stage-II maps over a sample
    demo.py            `python -m gen.study.demo`: `make demo`'s digits scored
"""
from .plan import check_run_flags, read_study, run_command_line
from .runs import main

__all__ = ["check_run_flags", "main", "read_study", "run_command_line"]
