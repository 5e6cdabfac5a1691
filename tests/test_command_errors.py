"""Every command line turns bad input into one line on stderr and exit status 2, before expensive work, and
leaves no half-written file. Each row: the command, its arguments, and a phrase the line must hold."""
import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time

import accelerate.utils.other
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load
from tiny import write_corrupt_image, write_image_folder

import extract_latents
import fid.cli
import fid.networks
import gen.study
import gen.study.demo
import sample
import train_dit
import train_sit
from common.cli import run_command
from fid.images import FolderImages
from gen import save_pretrained
from gen.data import ImageFolderDataset, LatentDataset
from gen.data.latents import MANIFEST, shard_name
from gen.models import create_model

QUICK = ["--image-size", "16", "--num-classes", "3", "--global-batch-size", "4", "--num-workers", "0",
         "--vae", "none", "--log-every", "1", "--sample-every", "0", "--num-sampling-steps", "2",
         "--sampling-method", "euler", "--max-steps", "2", "--ckpt-every", "1"]


@pytest.fixture(autouse=True)
def offline_and_fresh(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # --vae ema must fail at once, as on a machine without network
    monkeypatch.delenv("VCA_GEN_DEBUG", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Paths the rows refer to: image folders good and bad, exports, a finished run, files that are not folders."""
    root = tmp_path_factory.mktemp("world")
    paths = {"images": write_image_folder(root / "images"), "empty": str(root / "empty"),
             "no_images": str(root / "no_images" / "cat"), "file": str(root / "a_file")}
    os.makedirs(paths["empty"])
    os.makedirs(paths["no_images"])
    paths["no_images"] = os.path.dirname(paths["no_images"])
    open(paths["file"], "w").close()
    paths["corrupt"] = write_image_folder(root / "corrupt")
    write_corrupt_image(paths["corrupt"])
    (root / "bad.yaml").write_text("model: [SiT-Mini/4\n")
    (root / "unknown.yaml").write_text("modle: SiT-Mini/4\n")
    paths.update(bad_yaml=str(root / "bad.yaml"), unknown_yaml=str(root / "unknown.yaml"))
    for family in ("DiT", "SiT"):
        torch.manual_seed(0)
        model = create_model(f"{family}-Mini/4", input_size=16, in_channels=3, num_classes=3)
        paths[family] = save_pretrained(model, str(root / f"{family}.safetensors"))
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(open(paths["DiT"], "rb").read()[:500])
    paths["truncated"] = str(truncated)
    torch.save({}, root / "DiT-XL-2-256x256.pt")
    np.savez(root / "no_labels.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    np.savez(root / "other_key.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    (root / "not_a_zip.npz").write_text("not a zip")
    paths.update(official=str(root / "DiT-XL-2-256x256.pt"), **{k: str(root / f"{k}.npz") for k in
                                                                ("no_labels", "other_key", "not_a_zip")})
    for name, field, value in EDITED_METADATA:
        paths[name] = edited_export(paths["SiT" if field == "process" else "DiT"], root / f"{name}.safetensors",
                                    field, value)
    nan_state = load(open(paths["DiT"], "rb").read())
    nan_state["final_layer.linear.bias"][0] = float("nan")
    paths["nan weight"] = edited_export(paths["DiT"], root / "nan.safetensors", "config", None, tensors=nan_state)
    with open(root / "code.pkl", "wb") as file:  # a plain pickle that would run code: torch refuses its opcodes
        pickle.dump({"weights": Payload()}, file, protocol=4)
    torch.save({"weights": Payload()}, root / "code.pt")  # a torch file that would run code: torch names the global
    paths.update(code_pkl=str(root / "code.pkl"), code_pt=str(root / "code.pt"))
    paths["photos"] = str(root / "photos")
    os.makedirs(paths["photos"])
    open(os.path.join(paths["photos"], "holiday.jpg"), "wb").close()
    paths["run"] = str(root / "run")
    train_sit.main(["--model", "SiT-Mini/4", "--results-dir", paths["run"], "--data-path", paths["images"], *QUICK])
    AcceleratorState._reset_state(reset_partial_state=True)
    return paths


EDITED_METADATA = [  # (name, metadata field, new value: a dict edits the JSON, a string replaces the text)
    ("config not JSON", "config", "{not json"),
    ("negative width", "config", {"hidden_size": -5}),
    ("unknown family", "config", {"family": "Bogus"}),
    ("a 1 TiB config", "config", {"hidden_size": 16384, "depth": 1024, "num_heads": 16}),
    ("bogus path type", "process", {"path_type": "Bogus"}),
    ("process not a mapping", "process", "[1, 2]"),
    ("hub VAE", "vae", '"someone/any-repository"'),
]


def edited_export(source, out, field, value, tensors=None) -> str:
    """A copy of export `source` whose metadata `field` is edited (as a user with a hex editor, or an attacker)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(source, framework="pt") as handle:
        metadata = dict(handle.metadata())
    if isinstance(value, dict):
        metadata[field] = json.dumps({**(json.loads(metadata[field]) or {}), **value})
    elif value is not None:
        metadata[field] = value
    save_file(tensors or load(open(source, "rb").read()), str(out), metadata=metadata)
    return str(out)


def yaml_file(tmp, text: str, encoding: str = "utf-8") -> str:
    (tmp / "config.yaml").write_text(text + "\n", encoding=encoding)
    return str(tmp / "config.yaml")


def train(world, tmp, *extra, model="SiT-Mini/4", data="images"):
    data_flags = ["--data-path", world[data]] if data else []
    return ["--model", model, "--results-dir", str(tmp / "out"), *data_flags, *QUICK, *extra]


TRAINING = [
    ("unknown model", lambda w, t: train(w, t, model="SiT-XXL/2"),
     "unknown model 'SiT-XXL/2'; did you mean SiT-XL/2 or SiT-L/2? the names are FAMILY-SIZE/PATCH[-VCA]"),
    ("a model name in the wrong case", lambda w, t: train(w, t, model="sit-mini/4-vca"),
     "did you mean SiT-Mini/4-VCA?"),
    ("other family", lambda w, t: train(w, t, model="DiT-Mini/4"), "use train_dit.py"),
    ("unknown flag", lambda w, t: train(w, t, "--bogus", "1"), "unrecognized arguments: --bogus"),
    ("config not YAML", lambda w, t: train(w, t, "--config", w["bad_yaml"]), "is not valid YAML"),
    ("config unknown key", lambda w, t: train(w, t, "--config", w["unknown_yaml"]),
     "unknown key(s) ['modle']; did you mean mode or model for modle?"),
    ("a prefix of a flag is not the flag", lambda w, t: train(w, t, "--max-step", "3"),
     "unrecognized arguments: --max-step; did you mean --max-steps for --max-step?"),
    ("a prefix of another flag", lambda w, t: train(w, t, "--ckpt", "x"), "did you mean --ckpt-every for --ckpt?"),
    ("config not UTF-8", lambda w, t: train(w, t, "--config", yaml_file(t, "lr: 1e-4 # caf\xe9", "latin-1")),
     "is not UTF-8 text (byte 14); save it as UTF-8"),
    ("config of aliases (billion laughs)", lambda w, t: train(w, t, "--config", yaml_file(
        t, "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nmodel: *b")),
     "an alias (*a) on line 2"),
    ("config key twice", lambda w, t: train(w, t, "--config", yaml_file(t, "max_steps: 2\nmax_steps: 3")),
     "key 'max_steps' is given twice (line 2)"),
    ("patch does not divide", lambda w, t: train(w, t, "--image-size", "18"), "patch size 4"),
    ("batch larger than data", lambda w, t: train(w, t, "--global-batch-size", "64"), "fewer than one global batch"),
    ("missing data", lambda w, t: train(w, t, "--data-path", str(t / "nowhere"), data=None), "is not a folder"),
    ("empty data", lambda w, t: train(w, t, data="empty"), "has no class folders"),
    ("data without images", lambda w, t: train(w, t, data="no_images"), "no images"),
    ("strict corrupt image", lambda w, t: train(w, t, "--strict", data="corrupt"), "cannot read image"),
    ("results dir not creatable", lambda w, t: train(w, t, "--results-dir", os.path.join(w["file"], "x")),
     "cannot create --results-dir"),
    ("resume with no checkpoint", lambda w, t: train(w, t, "--resume", "latest"), "no finished checkpoint"),
    ("resume a folder that is not one", lambda w, t: train(w, t, "--resume", w["empty"]),
     "not a training checkpoint folder"),
    ("resume a missing folder", lambda w, t: train(w, t, "--resume", str(t / "nowhere")), "is not a folder"),
    ("vae offline", lambda w, t: train(w, t, "--vae", "ema"), "cannot load the VAE"),
    ("missing latents", lambda w, t: train(w, t, "--latents", str(t / "nowhere"), data=None), "is not a folder"),
    ("zero steps", lambda w, t: train(w, t, "--max-steps", "0"), "--max-steps must be at least 1"),
    ("zero epochs", lambda w, t: train(w, t, "--epochs", "0"), "--epochs must be at least 1"),
    ("zero log interval", lambda w, t: train(w, t, "--log-every", "0"), "--log-every must be at least 1"),
    ("EMA decay above 1", lambda w, t: train(w, t, "--ema-decay", "2"), "--ema-decay must lie in [0.0, 1.0]"),
    ("zero learning rate", lambda w, t: train(w, t, "--lr", "0"), "--lr must be a positive number"),
    ("nan guidance", lambda w, t: train(w, t, "--cfg-scale", "nan"), "--cfg-scale must be a number >= 1"),
    ("zero guidance", lambda w, t: train(w, t, "--cfg-scale", "0"), "--cfg-scale must be a number >= 1"),
    ("sampling method typo", lambda w, t: train(w, t, "--sampling-method", "eulr"), "unknown ODE --sampling-method"),
    ("one sampling step", lambda w, t: train(w, t, "--num-sampling-steps", "1"), "--num-sampling-steps >= 2"),
    ("grid class out of range", lambda w, t: train(w, t, "--grid-classes", "7"), "--grid-classes [7] must lie"),
    ("a new run in a used folder", lambda w, t: train(w, t, "--results-dir", w["run"]), "already holds a run"),
    ("tracker not installed", lambda w, t: train(w, t, "--log-with", "wandb"), "the wandb package is not installed"),
    ("unknown tracker", lambda w, t: train(w, t, "--log-with", "tensorbored"), "unknown tracker"),
    ("init-from with resume", lambda w, t: train(w, t, "--init-from", w["SiT"], "--resume", "latest"),
     "give only one"),
    ("init-from missing", lambda w, t: train(w, t, "--init-from", str(t / "none.pt")), "--init-from"),
    ("init-from a pickle of code", lambda w, t: train(w, t, "--init-from", w["code_pkl"]),
     "(refused by weights_only: Unsupported operand 149)"),
    ("init-from a torch file of code", lambda w, t: train(w, t, "--init-from", w["code_pt"]),
     "(refused by weights_only: Unsupported global: GLOBAL"),
    ("init-from another model", lambda w, t: train(w, t, "--init-from", w["SiT"], model="SiT-Mini/2"),
     "does not fit SiT-Mini/2"),
    ("accumulation does not divide", lambda w, t: train(w, t, "--grad-accum-steps", "3"),
     "not divisible by 1 processes x 3 accumulation steps"),
    ("inception evaluation without a reference",
     lambda w, t: train(w, t, "--eval-every", "2", "--eval-features", "inception"), "needs --eval-ref"),
    ("too few evaluation samples", lambda w, t: train(w, t, "--eval-every", "2", "--eval-samples", "2"),
     "--eval-samples must be at least 4"),
    ("resume with another seed", lambda w, t: train(w, t, "--results-dir", w["run"], "--resume", "latest",
                                                    "--global-seed", "5"), "--global-seed 5 (the run used 0)"),
    # issue 22 B: typed configs, results-folder lock, seeds, class counts
    *[(f"config {text}", lambda w, t, text=text: train(w, t, "--config", yaml_file(t, text)), phrase)
      for text, phrase in [('random_flip: "false"', 'random_flip = "false" must be true or false; write false'),
                           ("max_steps: 4.7", "max_steps = 4.7 is not an integer"),
                           ("max_steps: true", "max_steps = true is not an integer"),
                           ("max_steps: [1, 2]", "max_steps = [1, 2] is a list"),
                           ("image_size: 4.0", "image_size = 4.0 is not an integer"),
                           ("global_batch_size: null", "global_batch_size = null, but it needs an integer"),
                           ("lr: fast", 'lr = "fast" is not a number'),
                           ("mode: XDE", 'mode = "XDE" is not one of')]],
    ("negative seed", lambda w, t: train(w, t, "--global-seed", "-1"), "--global-seed must lie in [0, 4294967295]"),
    ("seed above 2^64", lambda w, t: train(w, t, "--global-seed", str(2**64 + 1)), "--global-seed must lie in"),
    ("a hundred billion classes", lambda w, t: train(w, t, "--num-classes", "100000000000"),
     "--num-classes must be at most 100,000"),
    ("results dir of non-UTF-8 bytes", lambda w, t: train(w, t, "--results-dir", os.path.join(t, "run-\udcff")),
     "has bytes that are not UTF-8 text in its name"),
    ("a new run in a folder of someone's files", lambda w, t: train(w, t, "--results-dir", w["photos"]),
     "holds files this command did not write (holiday.jpg)"),
    # issue 31: the recipe's options
    ("cosine loss without velocities", lambda w, t: train(w, t, "--cos-loss", "--prediction", "noise"),
     "--cos-loss compares velocities: it needs a SiT model with --prediction velocity"),
    ("empty guidance interval", lambda w, t: train(w, t, "--guidance-low", "0.8", "--guidance-high", "0.2"),
     "--guidance-low 0.8 is above --guidance-high 0.2"),
    ("negative time shift", lambda w, t: train(w, t, "--time-shift", "-1"), "--time-shift must be at least 0.0"),
    ("beta2 of 1", lambda w, t: train(w, t, "--adam-beta2", "1"), "--adam-beta2 must lie in [0.0, 1.0)"),
    ("unknown weighting", lambda w, t: train(w, t, "--weighting", "cosine"), "invalid choice: 'cosine'"),
    ("REPA past the last block", lambda w, t: train(w, t, "--enc-type", "digits", "--encoder-depth", "9"),
     "--encoder-depth 9 is past the last of SiT-Mini/4's 4 blocks"),
    ("an unknown encoder", lambda w, t: train(w, t, "--enc-type", "dinov9"), "--enc-type 'dinov9' is neither"),
    ("channel norm of pixels", lambda w, t: train(w, t, "--latent-norm", "channel", "--vae", "none"),
     "--latent-norm channel normalises VAE latents"),
    ("digits at 4096 px", lambda w, t: train(w, t, "--image-size", "4096", data=None),
     "--image-size must lie in [1, 512], got 4096"),
]


@pytest.mark.parametrize("name, arguments, phrase", TRAINING, ids=[row[0] for row in TRAINING])
def test_train_sit_bad_input_is_one_line(world, tmp_path, capsys, name, arguments, phrase):
    assert_one_line_error(train_sit.main, arguments(world, tmp_path), phrase, capsys, tmp_path)


def test_a_data_worker_error_is_its_own_line_not_its_traceback(world, tmp_path, capsys):
    arguments = train(world, tmp_path, "--strict", "--num-workers", "1", data="corrupt")
    line = assert_one_line_error(train_sit.main, arguments, "error: cannot read image", capsys, tmp_path)
    assert "Traceback" not in line and "drop --strict to skip it" in line


def test_study_shared_flags_are_checked(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    for shared, phrase in [("[1, 2]", "shared must map flag names to values"),
                           ("{max_steps: 4.7}", "max_steps = 4.7 is not an integer")]:
        study.write_text(f"models: [SiT-Mini/4]\nseeds: [0]\nreport_dir: {tmp_path}\nshared: {shared}\n")
        assert_one_line_error(gen.study.main, [study, "--report-only"], phrase, capsys, tmp_path)


def test_a_live_run_holds_its_folder_and_a_killed_one_lets_go(world, tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from common.files import lock_folder; "
                               "held = lock_folder(sys.argv[1], 'test'); print('locked', flush=True); time.sleep(60)",
                               str(folder)], stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(__file__) + "/..")
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_one_line_error(train_sit.main, train(world, tmp_path),
                              f"--results-dir {folder} is in use by a running process (pid {holder.pid}", capsys,
                              tmp_path)
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock, the pid stays in the file
        holder.wait()
    AcceleratorState._reset_state(reset_partial_state=True)
    assert run_command(train_sit.main, train(world, tmp_path)) == str(folder)
    assert f"taking over {folder / 'run.lock'} from pid {holder.pid}" in capsys.readouterr().out
    assert (folder / "run.lock").read_text() == ""  # a clean end leaves nothing to take over


@pytest.mark.parametrize("checkpoint, error", [
    (1, OSError(errno.ENOSPC, "No space left on device")),
    (1, SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")),
    (2, OSError(errno.ENOSPC, "No space left on device"))], ids=["first OSError", "first SafetensorError", "second"])
def test_a_full_disk_at_a_checkpoint_is_one_line_and_leaves_no_tmp(world, tmp_path, capsys, monkeypatch, checkpoint,
                                                                   error):
    real_save, calls = accelerate.utils.other.safe_save_file, []

    def disk_fills(*args, **kwargs):  # the first file of a checkpoint: accelerate's model.safetensors
        calls.append(args)
        if len(calls) == checkpoint:
            raise error
        return real_save(*args, **kwargs)

    monkeypatch.setattr(accelerate.utils.other, "safe_save_file", disk_fills)
    kept = ("the last finished checkpoint", "continue with --resume latest") if checkpoint > 1 else \
        ("no earlier checkpoint exists", "start again with another --results-dir")
    line = assert_one_line_error(train_sit.main, train(world, tmp_path), f"checkpoint of step {checkpoint} not "
                                 f"saved: no space left on the device", capsys, tmp_path)
    assert all(phrase in line for phrase in kept) and ("--resume" in line) == (checkpoint > 1)
    assert sorted(os.listdir(tmp_path / "out" / "ckpt")) == ["losses.jsonl", *(["step-0000001"] * (checkpoint > 1))]


def test_train_dit_bad_input_is_one_line(world, tmp_path, capsys):
    def dit_arguments(*extra, model="DiT-Mini/4"):
        arguments = train(world, tmp_path, *extra, model=model)
        at = arguments.index("--sampling-method")  # a SiT flag
        return arguments[:at] + arguments[at + 2:]

    assert_one_line_error(train_dit.main, dit_arguments(model="SiT-Mini/4"), "use train_sit.py", capsys, tmp_path)
    assert_one_line_error(train_dit.main, dit_arguments("--num-sampling-steps", "0"),
                          "--num-sampling-steps must be at least 1", capsys, tmp_path)
    assert_one_line_error(train_dit.main, dit_arguments("--mode", "SDE"),  # SiT's flag, not a prefix of --model
                          "unrecognized arguments: --mode; did you mean --model for --mode?", capsys, tmp_path)


def sample_args(world, tmp, *extra, family="DiT"):
    sampler = ["--sampler", "ddim"] if family == "DiT" else []
    return ["--ckpt", world[family], "--vae", "none", "--num-sampling-steps", "2", *sampler,
            "--output", str(tmp / "grid.png"), "--class-labels", "0", "1", *extra]


SAMPLING = [
    ("missing checkpoint", lambda w, t: sample_args(w, t, "--ckpt", str(t / "none.safetensors")), "not found"),
    ("truncated checkpoint", lambda w, t: sample_args(w, t, "--ckpt", w["truncated"]), "truncated"),
    ("zero samples", lambda w, t: sample_args(w, t, "--num-fid-samples", "0"), "--num-fid-samples must be at least"),
    ("not a weights file", lambda w, t: sample_args(w, t, "--ckpt", w["bad_yaml"]),
     "is not a weights file; pass an exported .safetensors"),
    ("a flag of another tool", lambda w, t: sample_args(w, t, "--num-samples", "10"),  # named before the positional
     "unrecognized arguments: --num-samples; did you mean --num-fid-samples"),
    ("zero batch", lambda w, t: sample_args(w, t, "--num-fid-samples", "4", "--per-proc-batch-size", "0"),
     "--per-proc-batch-size must be at least 1"),
    ("zero steps", lambda w, t: sample_args(w, t, "--num-sampling-steps", "0"), "--num-sampling-steps must be"),
    ("one SiT step", lambda w, t: sample_args(w, t, "--num-sampling-steps", "1", family="SiT"),
     "--num-sampling-steps >= 2"),
    ("SiT method typo", lambda w, t: sample_args(w, t, "--sampling-method", "rk5", family="SiT"),
     "unknown ODE --sampling-method 'rk5'"),
    ("zero columns", lambda w, t: sample_args(w, t, "--nrow", "0"), "--nrow must be at least 1"),
    ("negative guidance", lambda w, t: sample_args(w, t, "--cfg-scale", "-1"), "--cfg-scale must be a number >= 1"),
    ("output in an impossible folder", lambda w, t: sample_args(w, t, "--output", os.path.join(w["file"], "g.png")),
     "cannot create the folder of --output"),
    ("output is a folder", lambda w, t: sample_args(w, t, "--output", str(t)), "is a folder"),
    ("class label out of range", lambda w, t: sample_args(w, t, "--class-labels", "99"), "must lie in [0, 3)"),
    ("vae offline", lambda w, t: sample_args(w, t, "--vae", "ema", "--ckpt", w["official"]), "cannot load the VAE"),
    ("SD-VAE for an RGB model without a VAE record", lambda w, t: sample_args(w, t, "--vae", "ema"),
     "trained with --vae none"),
    # issue 22 B: seeds, class counts, flags that do not fit the checkpoint
    ("negative seed", lambda w, t: sample_args(w, t, "--seed", "-1"), "--seed must lie in [0, 4294967295], got -1"),
    ("seed above 2^64", lambda w, t: sample_args(w, t, "--seed", str(2**64 + 1)), "--seed must lie in"),
    ("a hundred billion classes", lambda w, t: sample_args(w, t, "--num-classes", "100000000000"),
     "--num-classes must be at most 100,000"),
    ("pixels for an official .pt", lambda w, t: sample_args(w, t, "--ckpt", w["official"]),
     "--vae none does not fit"),
    ("DiT sampler for SiT", lambda w, t: sample_args(w, t, "--sampler", "ddim", family="SiT"),
     "--sampler ddim is a DiT flag, but"),
    ("SiT mode for DiT", lambda w, t: sample_args(w, t, "--mode", "SDE"), "--mode SDE is a SiT flag, but"),
    ("SiT positional mode for DiT", lambda w, t: ["SDE", *sample_args(w, t)], "--mode SDE is a SiT flag"),
    ("DiT diffusion flag for SiT", lambda w, t: sample_args(w, t, "--noise-schedule", "cosine", family="SiT"),
     "--noise-schedule cosine is a DiT flag"),
    # issue 32: a weights file's metadata is checked, values have upper bounds
    *[(f"metadata: {name}", lambda w, t, name=name: recorded_vae(sample_args(w, t, "--ckpt", w[name])), phrase)
      for name, phrase in [
        ("config not JSON", "metadata field 'config' is not JSON"),
        ("negative width", "hidden_size = -5 is not an integer in [1, 65536]"),
        ("unknown family", "family = 'Bogus' is not one of ['DiT', 'SiT']"),
        ("a 1 TiB config", "parameters, more than 1e+10"),
        ("bogus path type", "--path-type = 'Bogus' is not one of ['Linear', 'GVP', 'VP']"),
        ("process not a mapping", "metadata field 'process' is [1, 2], not a dict"),
        ("hub VAE", "records the VAE 'someone/any-repository', which is no local folder"),
        ("nan weight", "holds NaN or infinite weights (final_layer.linear.bias)")]],
    ("a run folder for --ckpt", lambda w, t: sample_args(w, t, "--ckpt", w["run"]),
     "is not a training checkpoint folder (it has no ema.safetensors); pass"),
    ("a hundred million steps", lambda w, t: sample_args(w, t, "--num-sampling-steps", "100000000"),
     "--num-sampling-steps must lie in [1, 100000]"),
    ("more DiT steps than its chain", lambda w, t: sample_args(w, t, "--num-sampling-steps", "1001"),
     "--num-sampling-steps must lie in [1, 1000] (the model's diffusion chain has 1000 steps)"),
]


def recorded_vae(arguments: list[str]) -> list[str]:
    """`arguments` without their --vae none: the weights file's record decides."""
    at = arguments.index("--vae")
    return arguments[:at] + arguments[at + 2 :]


@pytest.mark.parametrize("name, arguments, phrase", SAMPLING, ids=[row[0] for row in SAMPLING])
def test_sample_bad_input_is_one_line(world, tmp_path, capsys, name, arguments, phrase):
    assert_one_line_error(sample.main, arguments(world, tmp_path), phrase, capsys, tmp_path)


DEMO = [("npz without labels", "no_labels", "lacks ['arr_1']"),
        ("npz of another key", "other_key", "lacks ['arr_0', 'arr_1'] (it holds ['images'])"),
        ("not a zip", "not_a_zip", "is not a readable .npz of samples")]


@pytest.mark.parametrize("name, key, phrase", DEMO, ids=[row[0] for row in DEMO])
def test_demo_bad_input_is_one_line(world, tmp_path, capsys, name, key, phrase):
    assert_one_line_error(gen.study.demo.main, [world[key]], phrase, capsys, tmp_path)


EXTRACTION = [
    ("pixels need no extraction", ["--vae", "none"], "nothing to extract"),
    ("zero shard size", ["--vae", "ema", "--shard-size", "0"], "--shard-size must be at least 1"),
    ("missing data", ["--vae", "ema", "--data-path", "/nowhere/at/all"], "is not a folder"),
    ("vae offline", ["--vae", "ema"], "cannot load the VAE"),
]


@pytest.mark.parametrize("name, arguments, phrase", EXTRACTION, ids=[row[0] for row in EXTRACTION])
def test_extract_latents_bad_input_is_one_line(tmp_path, capsys, name, arguments, phrase):
    command = ["--output", str(tmp_path / "latents"), "--image-size", "16", *arguments]
    assert_one_line_error(extract_latents.main, command, phrase, capsys, tmp_path)


def test_fid_bad_input_is_one_line(tmp_path, capsys):
    assert fid.cli.main(["calc", str(tmp_path / "none.npz"), "--ref", str(tmp_path / "ref.npz")]) == 2
    assert fid.cli.main(["calc"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "samples not found" in lines[0] and "arguments are required: samples" in lines[1]


def test_a_reference_of_object_arrays_is_refused_unread(tmp_path, capsys):
    np.savez(tmp_path / "ref.npz", mu=np.array([Payload()], dtype=object), sigma=np.eye(2))  # a pickle inside
    np.savez(tmp_path / "samples.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    assert fid.cli.main(["calc", str(tmp_path / "samples.npz"), "--ref", str(tmp_path / "ref.npz")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "ref.npz: mu is not a numeric array" in lines[0], lines


# -- damaged data inputs (issue 22): latent folders, image modes, sample folders, fid sizes -------------------
@pytest.fixture(scope="module")
def latent_world(world, tiny_vae, tmp_path_factory):
    """A finished latent folder of world's 12 images in 3 shards, and the arguments that made it."""
    folder = str(tmp_path_factory.mktemp("latent_world") / "latents")
    arguments = ["--data-path", world["images"], "--output", folder, "--image-size", "16", "--vae", tiny_vae,
                 "--num-workers", "0", "--shard-size", "4", "--dtype", "float32"]
    extract_latents.main(arguments)
    AcceleratorState._reset_state(reset_partial_state=True)
    return {"latents": folder, "vae": tiny_vae, "arguments": arguments}


def damaged_latents(latent_world, tmp, damage, *extra):
    """Training arguments on a copy of the latent folder that `damage(folder)` has damaged."""
    folder = str(tmp / "latents")
    shutil.copytree(latent_world["latents"], folder)
    damage(folder)
    return ["--model", "SiT-Mini/4", "--results-dir", str(tmp / "out"), *QUICK, "--latents", folder,
            "--vae", latent_world["vae"], *extra]


def truncate(path, keep=300):
    with open(path, "r+b") as file:
        file.truncate(keep)


def edit_manifest(folder, edit):
    path = os.path.join(folder, MANIFEST)
    with open(path) as file:
        manifest = json.load(file)
    edit(manifest)
    with open(path, "w") as file:
        json.dump(manifest, file)


def write_text(path, text):
    with open(path, "w") as file:
        file.write(text)


def nan_latent(path):
    """A shard whose first latent is NaN, the same size as before (an fp16 encoder's overflow)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load(open(path, "rb").read())
    tensors["latents"][0] = float("nan")
    save_file(tensors, path, metadata=metadata)


LATENTS = [
    ("truncated shard", lambda f: truncate(os.path.join(f, shard_name(1))), (),
     "shard-00001.safetensors has 300 bytes, the manifest says"),
    ("truncated shard of an older manifest", lambda f: (
        edit_manifest(f, lambda m: [shard.pop("bytes") for shard in m["shards"]]),
        truncate(os.path.join(f, shard_name(1)))), (), "shard-00001.safetensors is not a readable shard"),
    ("manifest not JSON", lambda f: write_text(os.path.join(f, MANIFEST), "{not json"), (),
     "manifest.json is not valid JSON"),
    ("manifest without shards", lambda f: edit_manifest(f, lambda m: m.pop("shards")), (),
     "'shards' must be a list (lacks it)"),
    ("manifest shape edited", lambda f: edit_manifest(f, lambda m: m.update(shape=[4, 8, 9])), (),
     "the manifest's shape [4, 8, 9] says [4, 2, 4, 8, 9]"),
    ("manifest of fewer classes than its labels", lambda f: edit_manifest(f, lambda m: m.update(classes=["a", "b"])),
     ("--num-classes", "2"), "shard-00002.safetensors holds labels 2..2 but"),
    ("manifest features edited", lambda f: edit_manifest(f, lambda m: m.update(features={"enc_type": "digits"})),
     (), "'features' must be"),
    ("NaN latents", lambda f: nan_latent(os.path.join(f, shard_name(0))), ("--max-steps", "3", "--log-every", "3"),
     "shard-00000.safetensors holds NaN or infinite latents, which make the loss NaN"),
]


@pytest.mark.parametrize("name, damage, extra, phrase", LATENTS, ids=[row[0] for row in LATENTS])
def test_damaged_latent_folder_is_one_line(latent_world, tmp_path, capsys, name, damage, extra, phrase):
    arguments = damaged_latents(latent_world, tmp_path, damage, *extra)
    line = assert_one_line_error(train_sit.main, arguments, phrase, capsys, tmp_path)
    assert "run extract_latents.py again" in line


def test_a_damaged_shard_is_redone_by_extract_latents(latent_world, tmp_path, capsys):
    folder = str(tmp_path / "latents")
    shutil.copytree(latent_world["latents"], folder)
    intact = load(open(os.path.join(folder, shard_name(1)), "rb").read())  # not a memory map of what is cut next
    truncate(os.path.join(folder, shard_name(1)))
    arguments = [*latent_world["arguments"], "--output", folder]  # the last --output wins
    extract_latents.main(arguments)
    assert "shard-00001.safetensors is not a readable shard" in capsys.readouterr().err
    redone = load(open(os.path.join(folder, shard_name(1)), "rb").read())  # seeded per shard: the same latents
    assert all(torch.allclose(redone[key].float(), intact[key].float(), atol=1e-5) for key in intact)
    assert len(LatentDataset(folder, vae_name=latent_world["vae"], image_size=16)) == 12
    assert not [name for name in os.listdir(folder) if ".tmp" in name]


def test_fewer_data_classes_than_num_classes_is_one_warning_line(world, tmp_path, capsys):
    train_sit.main(train(world, tmp_path, "--num-classes", "5", "--max-steps", "1"))
    output = capsys.readouterr()
    warnings = [line for line in (output.out + output.err).splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "labels 3..4 never occur in training; pass --num-classes 3" in warnings[0]


def image_of_mode(mode):
    """A 2x2 image in `mode` whose pixels read as 8-bit (value, value, value) = 117, or are refused."""
    if mode.startswith("I;16"):
        return Image.fromarray(np.full((2, 2), 30000, np.uint16)), (117, 117, 117)  # 30000 >> 8
    if mode == "I":
        return Image.fromarray(np.full((2, 2), 30000, np.int32), "I"), (117, 117, 117)
    if mode == "P transparent":
        image = Image.fromarray(np.full((2, 2), 117, np.uint8), "L").convert("P")
        image.info["transparency"] = 0
        return image, (117, 117, 117)
    if mode == "1":
        return Image.new("1", (2, 2), 1), (255, 255, 255)
    if mode == "CMYK":
        return Image.new("CMYK", (2, 2), (0, 0, 0, 138)), (117, 117, 117)
    return Image.new(mode, (2, 2), (117,) * len(mode)), (117, 117, 117)  # L, LA, RGBA


IMAGE_MODES = ["I;16", "I", "L", "LA", "RGBA", "P transparent", "1", "CMYK"]


@pytest.mark.parametrize("mode", IMAGE_MODES)
def test_images_of_other_modes_read_as_their_8_bit_rgb(tmp_path, mode):
    image, rgb = image_of_mode(mode)
    path = tmp_path / "images" / "cat" / ("0.tiff" if mode in ("I", "CMYK") else "0.png")  # PNG has neither
    os.makedirs(path.parent)
    image.save(path, **({"transparency": 0} if mode == "P transparent" else {}))
    training_pixels = (ImageFolderDataset(str(tmp_path / "images"), 2)[0][0] + 1) * 127.5
    assert torch.allclose(training_pixels[:, 0, 0], torch.tensor(rgb, dtype=torch.float32), atol=1e-3)
    path_, fid_pixels, error = FolderImages(str(tmp_path / "images"))[0]
    assert error is None and tuple(fid_pixels[0, 0]) == rgb


def test_a_float_image_is_refused_naming_it(world, tmp_path, capsys):
    folder = shutil.copytree(world["images"], tmp_path / "images")
    Image.fromarray(np.full((20, 24), 0.5, np.float32), "F").save(folder / "cat" / "float.tiff")
    assert_one_line_error(train_sit.main, train(world, tmp_path, "--strict", "--data-path", str(folder), data=None),
                          "float.tiff (InvalidValue: a floating-point image (mode F)", capsys, tmp_path)


def test_a_truncated_sample_png_is_named(world, tmp_path, capsys):
    sample_dir = tmp_path / "samples"
    arguments = sample_args(world, tmp_path, "--num-fid-samples", "2", "--sample-dir", str(sample_dir))
    run_command(sample.main, arguments)
    whole = (sample_dir / "000000.png").read_bytes()
    (sample_dir / "000000.png").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    (sample_dir / "samples.npz").unlink()
    assert_one_line_error(sample.main, arguments, f"cannot read sample {sample_dir / '000000.png'}", capsys,
                          tmp_path)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(sample_dir / "000000.png")  # a stranger of another size
    line = assert_one_line_error(sample.main, arguments, f"sample {sample_dir / '000000.png'} is 20x20", capsys,
                                 tmp_path)
    assert "this run makes 16x16" in line


@pytest.mark.parametrize("foreign", ["someone's samples", "a photo"])
def test_a_sample_dir_of_foreign_files_is_refused_and_kept(world, tmp_path, capsys, foreign):
    sample_dir = tmp_path / "samples"
    sample_dir.mkdir()
    names = [f"{index:06d}.png" for index in range(5)] if foreign == "someone's samples" else ["holiday.jpg"]
    for name in names:
        Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(sample_dir / name, format="PNG")
    before = {name: (sample_dir / name).read_bytes() for name in names}
    arguments = sample_args(world, tmp_path, "--num-fid-samples", "10", "--sample-dir", str(sample_dir))
    line = assert_one_line_error(sample.main, arguments, f"--sample-dir {sample_dir} holds files this command did "
                                 "not write", capsys, tmp_path)
    assert names[0] in line and "give a new or empty folder" in line
    assert {name: (sample_dir / name).read_bytes() for name in os.listdir(sample_dir)} == before


def test_fid_calc_says_when_sample_and_reference_sizes_differ(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fid.networks, "InceptionFeatures", lambda *a, **k: pytest.fail("checked after Inception"))
    np.savez(tmp_path / "samples.npz", arr_0=np.zeros((4, 64, 64, 3), np.uint8))
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((4, 16, 16, 3), np.uint8))
    with pytest.raises(pytest.fail.Exception):
        fid.cli.main(["calc", str(tmp_path / "samples.npz"), "--ref", str(tmp_path / "ref.npz"), "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fid: warning: ") and "64x64 images but reference" in lines[0]


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "no network"])
def test_a_hub_vae_without_network_fails_at_once(world, tmp_path, capsys, monkeypatch, offline):
    if offline == "no network":
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the hub does not answer
    start = time.perf_counter()
    line = assert_one_line_error(train_sit.main, train(world, tmp_path, "--vae", "ema"), "cannot load the VAE",
                                 capsys, tmp_path)
    assert time.perf_counter() - start < 10  # huggingface_hub alone retries for about 30 s
    assert ("HF_HUB_OFFLINE is set" if offline == "HF_HUB_OFFLINE" else "does not answer") in line
    assert "`hf download stabilityai/sd-vae-ft-ema --local-dir vae`" in line and "--vae ./vae" in line
    if offline == "HF_HUB_OFFLINE":  # the digits need none
        line = assert_one_line_error(train_sit.main, train(world, tmp_path / "digits", "--vae", "ema", data=None),
                                     "cannot load the VAE", capsys, tmp_path)
        assert line.endswith("the built-in digits need no VAE: pass --vae none, as configs/demo.yaml does")


def test_resuming_past_max_steps_is_refused_before_anything_changes(world, tmp_path, capsys):
    arguments = train(world, tmp_path, "--max-steps", "2", "--ckpt-every", "2")
    train_sit.main(arguments)
    record = (tmp_path / "out" / "args.json").read_text()
    line = assert_one_line_error(train_sit.main, [*arguments, "--max-steps", "1", "--resume", "latest"],
                                 "is at step 2, past the 1 steps asked for: nothing to train", capsys, tmp_path)
    assert "sample.py --ckpt" in line and (tmp_path / "out" / "args.json").read_text() == record


def test_debug_shows_the_traceback(world, tmp_path):
    with pytest.raises(Exception, match="unknown model"):
        run_command(train_sit.main, [*train(world, tmp_path, model="SiT-XXL/2"), "--debug"])


def assert_one_line_error(main, argv, phrase, capsys, folder):
    with pytest.raises(SystemExit) as stop:
        run_command(main, [str(item) for item in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not is_library_chatter(line)]
    assert stop.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert phrase in lines[0], lines[0]
    half_written = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                    if ".tmp" in name]
    assert not half_written
    return lines[0]


def is_library_chatter(line: str) -> bool:
    """Progress bars and warnings that libraries print on stderr before the error."""
    progress = any(unit in line for unit in ("it/s]", "shard/s]", "img/s]"))
    return progress or line.startswith(("warning", "Warning")) or "UserWarning" in line


@pytest.mark.parametrize("command, argv, shown", [
    (train_dit.main, ["--help"], r"--lr LR\s+\(default: 0.0001\)"),  # a flag without help text shows it too
    (train_sit.main, ["--help"], r"--ema-decay EMA_DECAY\s+\(default: 0.9999\)"),
    (sample.main, ["--help"], r"--per-proc-batch-size \S+\s+[^\n]*\(default: \d+\)"),
    (extract_latents.main, ["--help"], r"\(default: "),
    (fid.cli.main, ["calc", "--help"], r"--batch-size \S+\s+[^\n]*\(default: 200\)"),
    (gen.study.main, ["--help"], r"--debug\s+show tracebacks.*\(default: False\)"),
    (gen.study.demo.main, ["--help"], r"samples\s+\(default: results/demo/samples.npz\)"),
])
def test_every_help_shows_the_defaults(monkeypatch, capsys, command, argv, shown):
    monkeypatch.setenv("COLUMNS", "300")  # one line per flag, whatever the terminal
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert re.search(shown, text), text
    assert "(default: None)" not in text


def test_sigterm_ends_a_run_with_a_word_and_what_is_kept(world, tmp_path):
    """A scheduler's stop (SIGTERM) says what is kept, as Ctrl-C does, and exits 143; the run then resumes."""
    command = [sys.executable, "train_sit.py", *train(world, tmp_path, "--max-steps", "100000", "--log-every", "50",
                                                      "--ckpt-every", "25")]
    root = os.path.join(os.path.dirname(__file__), "..")
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=root,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in runner.stdout:
        if "step 0000050" in line:  # past the first checkpoints (--ckpt-every 25)
            break
    runner.terminate()
    rest, _ = runner.communicate(timeout=60)
    assert runner.returncode == 143
    assert "terminated (SIGTERM); finished checkpoints and sample files are intact: rerun to resume" in rest
    assert os.listdir(tmp_path / "out" / "ckpt")


def test_a_plain_pt_takes_its_latent_side_from_the_vae_given(tmp_path, tiny_vae, capsys):
    """An official-style .pt records no config: its latent side is --image-size over this VAE's factor (2 here)."""
    torch.manual_seed(0)
    model = create_model("DiT-Mini/4", input_size=8, in_channels=4, num_classes=3)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    run_command(sample.main, ["--ckpt", str(tmp_path / "plain.pt"), "--model", "DiT-Mini/4", "--image-size", "16",
                              "--num-classes", "3", "--vae", tiny_vae, "--sampler", "ddim", "--num-sampling-steps",
                              "2", "--class-labels", "0", "1", "--output", str(tmp_path / "grid.png")])
    assert Image.open(tmp_path / "grid.png").size[0] > 16


class Payload:
    """A pickle that would run code when unpickled without weights_only."""

    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.parametrize("file", ["optimizer.bin", "random_states_0.pkl"])
def test_a_checkpoint_file_that_is_more_than_tensors_is_refused(world, tmp_path, capsys, file):
    """Resuming loads every file under weights_only; a refusal names the global, in one line, and nothing runs."""
    from gen.training.checkpoint import write_manifest

    run = shutil.copytree(world["run"], tmp_path / "out")
    checkpoint = run / "ckpt" / "step-0000002"
    torch.save({"state": {}, "param_groups": [], "extra": Payload()}, checkpoint / file)
    write_manifest(checkpoint)  # the manifest agrees: only the unpickling can tell
    line = assert_one_line_error(train_sit.main, train(world, tmp_path, "--resume", "latest", "--max-steps", "3"),
                                 f"cannot restore {checkpoint}", capsys, tmp_path)
    assert "Unsupported global: GLOBAL builtins.print" in line or "GLOBAL print" in line


def test_a_full_disk_while_extracting_latents_is_one_line(world, tiny_vae, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    arguments = ["--data-path", world["images"], "--output", str(tmp_path / "latents"), "--image-size", "16",
                 "--vae", tiny_vae, "--num-workers", "0", "--shard-size", "4"]
    line = assert_one_line_error(extract_latents.main, arguments, "no space left on the device writing", capsys,
                                 tmp_path)
    assert "shard-00000.safetensors" in line and not any(name.startswith("shard") for name in
                                                          os.listdir(tmp_path / "latents"))


def test_the_diffusers_export_checks_the_metadata_too(world, tmp_path, capsys):
    import gen.hub.diffusers_format

    line = assert_one_line_error(gen.hub.diffusers_format.main, [world["config not JSON"], str(tmp_path / "pipe")],
                                 "metadata field 'config' is not JSON", capsys, tmp_path)
    assert "export it again" in line and not (tmp_path / "pipe").exists()
