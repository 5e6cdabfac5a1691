"""The report of one `fid calc`: a printed table, `report.json` and `report.md`, each written atomically."""

import json
import os

from common.files import atomic_open  # the project's one atomic writer

METRIC_ROWS = (  # (result key, row label; None means the label comes from the result, e.g. FID-50K)
    ("fid", None), ("sfid", "sFID"), ("inception_score", "Inception Score"), ("precision", "Precision"),
    ("recall", "Recall"), ("kid", "KID"), ("class_accuracy", "Class accuracy"))
PROVENANCE_ROWS = (
    ("num_samples", "samples (N)"), ("samples", "samples file"), ("reference", "reference"),
    ("reference_sha256", "reference sha256"), ("reference_num_images", "reference images (P/R, KID)"),
    ("reference_statistics", "reference statistics"), ("inception_score_split_rule", "IS splits"),
    ("precision_recall_distances", "P/R distances"), ("feature_network", "feature network"),
    ("feature_extractor", "feature extractor"), ("feature_weights", "weights"),
    ("feature_weights_sha256", "weights sha256"),
    ("sampling_precision", "samples made in (sample.py --precision)"),
    ("device", "device"), ("tf32_convolutions", "TF32 convolutions"), ("tf32_matmul", "TF32 matmuls"),
    ("versions", "versions"), ("seconds", "time (s)"))

TIMING_ROWS = (  # result["timings"] keys in the order the stages run; values in seconds
    ("features_samples", "features: samples"), ("features_reference", "features: reference"),
    ("statistics", "statistics (mean, cov)"), ("fid", "Frechet distance: FID"), ("sfid", "Frechet distance: sFID"),
    ("inception_score", "Inception Score"), ("precision_recall", "precision/recall"), ("kid", "KID"),
    ("class_accuracy", "class accuracy"), ("total", "total"))

NOT_AVAILABLE = {  # why a metric is None
    "sfid": "n/a (reference has no mu_s/sigma_s)",
    "class_accuracy": "n/a (needs a network of the samples' classes, --features digits, and labels in arr_1)"}


def format_value(key, value, result):
    if value is None:
        return NOT_AVAILABLE.get(key, "n/a (reference has no arr_0 images)")
    if key == "class_accuracy":
        per_class = ", ".join(f"{label}: {share:.2f}" for label, share in result["class_accuracy_per_class"].items())
        return f"{value:.4f} (per class {per_class})"
    if key == "inception_score":
        if result.get("inception_score_splits") == 1:  # a spread needs two splits: say so, not "+- 0.00"
            return f"{value:.2f} (one split: no spread)"
        return f"{value:.2f} +- {result['inception_score_std']:.2f}"
    if key == "kid":  # papers print KID x 10^3
        return f"{value:.5f} +- {result['kid_std']:.5f} (x 1e3: {1e3 * value:.2f} +- {1e3 * result['kid_std']:.2f})"
    return f"{value:.4f}" if isinstance(value, float) and key != "seconds" else str(value)


def metric_label(key, label, result) -> str:
    if label is None:
        return result["fid_label"]
    network = result.get("feature_network") or "Inception"
    if key == "inception_score" and "inception" not in network.lower():
        return f"{label} ({network} network's classes)"  # the score of another classifier: not comparable with papers'
    return label


def report_rows(result):
    rows = [(metric_label(key, label, result), format_value(key, result[key], result)) for key, label in METRIC_ROWS]
    return rows + [(label, format_provenance(result.get(key), key)) for key, label in PROVENANCE_ROWS]


def format_provenance(value, key=None):
    if value is None and key == "sampling_precision":
        return "unknown (no sample_settings.json beside the samples)"
    if isinstance(value, dict):  # library versions
        return ", ".join(f"{name} {version}" for name, version in value.items())
    return "on" if value is True else "off" if value is False else str(value)


def format_seconds(value):
    """A stage's time: seconds, or why there are none ("cached": features read back, "-": stage not run)."""
    return "-" if value is None else value if isinstance(value, str) else f"{value:.2f}"


def timing_rows(result):
    """(stage label, time) per stage of `result["timings"]`; none for results made before stages were timed."""
    timings = result.get("timings") or {}
    return [(label, format_seconds(timings[key])) for key, label in TIMING_ROWS if key in timings]


def format_timings_line(result):
    """The stage times in one line, e.g. for the end of `fid calc`'s output."""
    return "time per stage (s): " + ", ".join(f"{label} {value}" for label, value in timing_rows(result))


def format_table(result, stages=True):
    """The printed report: metrics and provenance, then (with `stages`) a small table of time per stage."""
    rows = report_rows(result)
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    stage_rows = timing_rows(result) if stages else []
    if stage_rows:
        lines += ["", "time per stage (s)"] + [f"  {label:<{width - 2}}  {value}" for label, value in stage_rows]
    return "\n".join(lines)


def format_markdown(result):
    lines = [f"# {result['fid_label']}: {result['fid']:.2f}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report_rows(result)]
    if timing_rows(result):
        lines += ["", "| stage | seconds |", "| --- | --- |"]
        lines += [f"| {label} | {value} |" for label, value in timing_rows(result)]
    return "\n".join(lines + ["", "Computed with `python -m fid calc`."]) + "\n"


def write_text(path, text):
    with atomic_open(path, "w") as file:
        file.write(text)


def write_report(result, out_dir):
    """`report.json` (every value, machine-readable) and `report.md` in `out_dir`; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, "report.json"), os.path.join(out_dir, "report.md")
    write_text(json_path, json.dumps(result, indent=2) + "\n")
    write_text(md_path, format_markdown(result))
    return json_path, md_path
