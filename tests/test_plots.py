"""Pictures: curves.png of one run and the study's plots over models and seeds (from logs), sample grids with
labelled rows."""
import json

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from common.errors import UserError
from gen.run_log import read_log
from gen.sampling import save_grid
from gen.study.figures import bars_figure, metric_by_steps_figure, model_styles, plot_bars, plot_metric_by_steps
from gen.training.curves import MIN_POINTS_TO_SMOOTH, curves_figure, metric_by_step, metric_label, smooth, write_curves


def training_log(steps=range(0, 200, 10), seed=0, fid_every=None, loss_scale=1.0):
    """log.jsonl records: a training line per step, and with fid_every evaluation lines after them."""
    rng = np.random.default_rng(seed)
    records = [{"step": step, "loss": loss_scale * (1 + 1 / (1 + step)) * rng.uniform(0.9, 1.1),
                "images_per_sec": 50.0, "grad_norm": 1.0} for step in steps]
    if fid_every:
        records += [{"step": step, "fid": 100.0 / (1 + step / 50), "class_accuracy": 0.5}
                    for step in range(fid_every, steps[-1], fid_every)]
        records[len(steps) - 1]["fid"] = 12.5  # the last training line carries an evaluation too
    return records


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def assert_png(path, min_side=200):
    with Image.open(path) as image:
        image.verify()  # raises on a damaged file
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side and max(image.size) < 4000


def test_a_resumed_step_keeps_its_last_value():
    log = [{"step": 0, "loss": 3.0}, {"step": 10, "loss": 2.0}, {"step": 10, "loss": 1.5}, {"step": 5, "fid": 9.0}]
    steps, losses = metric_by_step(log, "loss")
    assert steps.tolist() == [0, 10] and losses.tolist() == [3.0, 1.5]
    assert metric_by_step(log, "fid")[1].tolist() == [9.0]


@pytest.mark.parametrize("with_fid", [False, True])
def test_curves_have_a_fid_panel_only_when_evaluated(tmp_path, with_fid):
    records = training_log(fid_every=50 if with_fid else None)
    records.insert(5, dict(records[5], loss=99.0))  # a resumed run logs step 50 twice; the later line wins
    log_path = write_jsonl(tmp_path / "log.jsonl", records)
    figure = curves_figure(read_log(log_path))
    assert len(figure.axes) == (2 if with_fid else 1)
    assert 99.0 not in figure.axes[0].collections[0].get_offsets()[:, 1]
    out = tmp_path / "run" / "curves.png"
    assert write_curves(log_path, out) == str(out)
    assert_png(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["curves.png"]  # no temporary file left behind


def test_metric_by_steps_two_models_two_seeds(tmp_path):
    runs = {name: [training_log(seed=seed, fid_every=40, loss_scale=scale) for seed in (0, 1)]
            for name, scale in (("DiT-Mini/2", 1.0), ("DiT-Mini/2-VCA", 0.8))}
    runs["DiT-Mini/2-VCA"][1] = runs["DiT-Mini/2-VCA"][1][:5]  # a seed still running: fewer steps
    figure = metric_by_steps_figure(runs, "fid", "FID")
    lines = figure.axes[0].lines
    assert [line.get_linestyle() for line in lines] == ["-", "--"]
    assert lines[0].get_color() == lines[1].get_color()  # twins share a colour
    out = plot_metric_by_steps(runs, "loss", tmp_path / "loss.png", "training loss", smoothing=0.9, log_y=True)
    assert_png(out)
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]


def test_styles_pair_each_vca_model_with_its_twin():
    styles = model_styles(["SiT-Mini/2", "DiT-Mini/2-VCA", "DiT-Mini/2", "SiT-Mini/2-VCA"])
    assert styles["SiT-Mini/2"]["color"] == styles["SiT-Mini/2-VCA"]["color"] != styles["DiT-Mini/2"]["color"]
    assert styles["DiT-Mini/2-VCA"]["linestyle"] == "--" and styles["DiT-Mini/2"]["hatch"] is None


def test_bars_of_single_values_and_of_seeds(tmp_path):
    out = plot_bars({"DiT-Mini/2": [41.0, 43.0, 40.0], "DiT-Mini/2-VCA": 39.5}, tmp_path / "speed.png", "images/s")
    assert_png(out)


# -- sample grids -------------------------------------------------------------------------------------------------
def test_labelled_rows_widen_the_grid_by_a_left_margin_holding_the_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    save_grid(images, 3, tmp_path / "plain.png")
    save_grid(images, 3, tmp_path / "labelled.png", row_labels=["0: zero", "1: one"])
    plain, labelled = (np.asarray(Image.open(tmp_path / name)) for name in ("plain.png", "labelled.png"))
    margin = labelled.shape[1] - plain.shape[1]
    assert margin > 0 and labelled.shape[0] == plain.shape[0]
    np.testing.assert_array_equal(labelled[:, margin:], plain)
    row_height = plain.shape[0] // 2
    for row in range(2):  # each label lies beside its own row
        assert (labelled[row * row_height : (row + 1) * row_height, :margin] < 128).any()
    with pytest.raises(UserError, match="one label per row"):
        save_grid(images, 3, tmp_path / "bad.png", row_labels=["only one"])


# -- honest pictures ----------------------------------------------------------------------------------------------
def test_the_smoothed_loss_is_a_weighted_mean_of_the_points_so_far():
    losses = np.random.default_rng(0).uniform(0.1, 1.0, 300) * np.linspace(3, 1, 300)
    smoothed = smooth(losses)
    prefix_max, prefix_min = np.maximum.accumulate(losses), np.minimum.accumulate(losses)
    assert (smoothed <= prefix_max + 1e-12).all() and (smoothed >= prefix_min - 1e-12).all()  # debiased
    assert smoothed[0] == losses[0]


@pytest.mark.parametrize("points", [20, 200])
def test_the_loss_is_smoothed_only_with_enough_points(points):
    steps = range(100, 100 * (points + 1), 100)
    log = [{"step": step, "loss": 0.5 * 0.9 ** (i / points * 15) + 0.1} for i, step in enumerate(steps)]
    line = curves_figure(log).axes[0].lines[0]
    logged = metric_by_step(log, "loss")[1]
    if points < MIN_POINTS_TO_SMOOTH:  # make demo logs 20 points: the line goes through them, not above
        np.testing.assert_allclose(line.get_ydata(), logged)
    else:
        assert "smoothed" in line.get_label()
        assert line.get_ydata().max() <= logged.max()


def test_the_fid_panel_names_its_network_and_sample_count():
    figure = curves_figure(training_log(fid_every=50) + [{"step": 200, "fid": 3.1, "eval_features": "digits",
                                                          "eval_samples": 100}])
    assert figure.axes[1].get_ylabel() == "FID (digits, N=100)"
    assert metric_label([{"step": 1, "fid": 2.0}]) == "FID"  # an older log without the record


def test_a_metric_spanning_decades_gets_a_log_axis():
    runs = {"DiT-Mini/2": [training_log(seed=0, fid_every=40), training_log(seed=1, fid_every=40)]}
    assert metric_by_steps_figure(runs, "fid", "FID").axes[0].get_yscale() == "linear"
    runs["DiT-Mini/2"][1].append({"step": 120, "fid": 1785.0})  # one seed diverges
    assert metric_by_steps_figure(runs, "fid", "FID").axes[0].get_yscale() == "log"


def test_bars_without_whiskers_draw_no_error_bars():
    speeds = {"DiT-Mini/2": [139.0, 76.0], "DiT-Mini/2-VCA": [249.0, 212.0]}
    def error_bars(figure):
        return [c for c in figure.axes[0].containers if isinstance(c, ErrorbarContainer)]

    assert len(error_bars(bars_figure(speeds, "images/s"))) == 2  # seeds of a measured quantity: min-max
    assert error_bars(bars_figure(speeds, "images/s", whiskers=False)) == []


def test_a_grid_frames_every_image_one_or_many(tmp_path):
    for count, shape in ((1, (68, 68, 3)), (3, (68, 200, 3)), (12, (134, 662, 3))):
        path = tmp_path / f"{count}.png"
        save_grid(np.zeros((count, 64, 64, 3), np.uint8), 10, str(path))
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == shape and (pixels[:2] == 255).all() and (pixels[:, :2] == 255).all()


def inside_the_figure(figure, artist) -> bool:
    """Whether the drawn text lies wholly inside the figure (not cut off at its edges)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    box, frame = artist.get_window_extent(canvas.get_renderer()), figure.bbox
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1


def test_bar_labels_tell_close_values_apart_and_long_titles_fit():
    """The study's parameters.png: 1,288,970 and 1,299,466 parameters were both "1.3e+06"-like; its images_per_sec.png:
    a long title and label ran off a two-bar figure."""
    from gen.study.figures import bars_figure, distinct_labels

    figure = bars_figure({"SiT-Mini/2": 1_288_970, "SiT-Mini/2-VCA": 1_299_466}, "parameters")
    assert [text.get_text() for text in figure.axes[0].texts] == ["1,288,970", "1,299,466"]
    assert distinct_labels([0.12341, 0.12344, 5.0]) == ["0.12341", "0.12344", "5"]
    figure = bars_figure({"SiT-Mini/2": [140.0, 150.0], "SiT-Mini/2-VCA": [120.0, 125.0]}, "training images/s",
                         "training images/s (median of the log lines, mean over seeds)", whiskers=False)
    axes = figure.axes[0]
    assert inside_the_figure(figure, axes.title) and inside_the_figure(figure, axes.yaxis.label)
    assert "".join(axes.get_title().split()) == "trainingimages/s(medianoftheloglines,meanoverseeds)"
