"""The report of one `fid calc`: a printed table, `report.json` and `report.md`, each written atomically."""

import json
import os

import numpy as np
import torch

METRIC_ROWS = (  # (result key, row label; None means the label comes from the result, e.g. FID-50K)
    ("fid", None), ("sfid", "sFID"), ("inception_score", "Inception Score"), ("precision", "Precision"),
    ("recall", "Recall"), ("kid", "KID"))
PROVENANCE_ROWS = (
    ("num_samples", "samples (N)"), ("samples", "samples file"), ("reference", "reference"),
    ("reference_sha256", "reference sha256"), ("reference_num_images", "reference images (P/R, KID)"),
    ("feature_extractor", "feature extractor"), ("inception_weights", "Inception weights"),
    ("inception_weights_sha256", "weights sha256"), ("device", "device"), ("seconds", "time (s)"))


def format_value(key, value, result):
    if value is None:
        return "n/a (reference has no " + ("mu_s/sigma_s)" if key == "sfid" else "arr_0 images)")
    if key == "inception_score":
        return f"{value:.2f} +- {result['inception_score_std']:.2f}"
    if key == "kid":
        return f"{value:.5f} +- {result['kid_std']:.5f}"
    return f"{value:.4f}" if isinstance(value, float) and key != "seconds" else str(value)


def report_rows(result):
    rows = [(label or result["fid_label"], format_value(key, result[key], result))
            for key, label in METRIC_ROWS]
    return rows + [(label, str(result[key])) for key, label in PROVENANCE_ROWS]


def format_table(result):
    rows = report_rows(result)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def format_markdown(result):
    lines = [f"# {result['fid_label']}: {result['fid']:.2f}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report_rows(result)]
    versions = f"torch {torch.__version__}, numpy {np.__version__}"
    return "\n".join(lines + ["", f"Computed with `python -m fid calc` ({versions})."]) + "\n"


def write_atomically(path, text):
    """Write to a temporary name then rename, so a crash never leaves a half-written report."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def write_report(result, out_dir):
    """`report.json` (every value, machine-readable) and `report.md` in `out_dir`; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, "report.json"), os.path.join(out_dir, "report.md")
    write_atomically(json_path, json.dumps(result, indent=2) + "\n")
    write_atomically(md_path, format_markdown(result))
    return json_path, md_path
