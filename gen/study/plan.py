"""A study's plan: its YAML read and checked (models, seeds, flags per family and per arm, jobs), and each run's
folder and command line (gen/study/runs.py trains them)."""
import os
import re
import sys

from common.cli import ArgumentParser, check_config
from common.errors import UserError
from common.yaml_file import read_yaml

from ..family import FAMILIES
from ..models.zoo import model_config
from ..settings.flags import add_training_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the scripts' folder
REQUIRED = ("models", "seeds", "report_dir", "shared")
NOISE_FLOOR_SEEDS = 3  # sampling seeds of the noise floor unless the study says `noise_floor_seeds`


# -- the plan -----------------------------------------------------------------------------------------------------
def read_study(path) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"study file {path} not found; see configs/study-digits.yaml")
    study = read_yaml(path, f"study file {path}") or {}
    missing = [key for key in REQUIRED if key not in study]
    if missing:
        raise UserError(f"study file {path} lacks {missing}; it needs {list(REQUIRED)}")
    if not isinstance(study["models"], list) or not isinstance(study["seeds"], list):
        raise UserError(f"study file {path}: models and seeds must be lists, e.g. models: [DiT-Mini/2] seeds: [0, 1]")
    for name in study["models"]:
        model_config(name)  # an unknown model fails before anything trains
    check_run_flags(study, path)
    if study.get("launcher", "python") not in ("python", "accelerate"):
        raise UserError(f"study file {path}: launcher must be python or accelerate, got {study['launcher']!r}")
    if "arms" in study:
        check_arms(study, path)
        for arm_study in arm_studies(study).values():
            check_run_flags(arm_study, path)
    seeds = study.get("noise_floor_seeds", NOISE_FLOOR_SEEDS)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds == 1 or seeds < 0:
        raise UserError(f"study file {path}: noise_floor_seeds must be 0 (not measured) or at least 2, got {seeds!r}")
    jobs = study.get("jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UserError(f"study file {path}: jobs must be a whole number of at least 1, got {jobs!r}")
    check_jobs(study, jobs, f"study file {path}: jobs")
    return study


def check_jobs(study, jobs: int, where: str):
    """Several runs at once only as child processes here: `accelerate launch`es would share GPUs and a port."""
    if jobs > 1 and study.get("launcher", "python") == "accelerate":
        raise UserError(f"{where} {jobs} with launcher accelerate: each run already spreads over the GPUs through "
                        f"accelerate launch; train them one at a time (jobs 1)")


def check_run_flags(study, path):
    """`shared` and `family` are mappings of training flags whose values fit the flags' types."""
    family = study.get("family", {})
    if not isinstance(family, dict) or not all(isinstance(v, dict) for v in family.values()):
        raise UserError(f"study file {path}: family must map DiT and SiT to flags, e.g. "
                        f"family: {{DiT: {{sampler: ddim}}}}")
    if not isinstance(study["shared"], dict):
        raise UserError(f"study file {path}: shared must map flag names to values, e.g. shared: "
                        f"{{max_steps: 600}}, got {study['shared']!r}")
    for name in {model_config(model).family for model in study["models"]}:
        parser = add_training_flags(ArgumentParser(prog=FAMILIES[name].script), name)
        check_config(parser, run_flags(study, name), f"study file {path}")


def run_flags(study, family: str) -> dict:
    """The flags of a run of `family`: `shared`, then the family's, then the arm's (gen/study/arms.py), each winning."""
    return {**study["shared"], **study.get("family", {}).get(family, {}), **study.get("arm", {})}


def run_dir(study, model: str, seed: int) -> str:
    return os.path.join(study["report_dir"], "runs", f"{model.replace('/', '-')}-seed{seed}")


def flags(values: dict) -> list[str]:
    """A dict of flag values as command-line words (True: --flag, False: --no-flag, lists: several values)."""
    words = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is False:
            words.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        elif value is not None:
            words += [flag, str(value)]
    return words


def run_command_line(study, model: str, seed: int) -> list[str]:
    family = model_config(model).family
    values = run_flags(study, family)
    arguments = ["--model", model, "--global-seed", str(seed), "--results-dir", run_dir(study, model, seed),
                 *flags(values)]
    script = os.path.join(ROOT, FAMILIES[family].script)
    if study.get("launcher", "python") == "accelerate":
        return ["accelerate", "launch", *map(str, study.get("launch_args", [])), script, *arguments]
    return [sys.executable, script, *arguments]


# -- arms: the whole study once per set of flags (gen/study/arms.py reports them) --------------------------------
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # a folder name on every system


def check_arms(study, path):
    """`arms`, when there, maps folder-safe names to mappings of training flags."""
    arms = study["arms"]
    if not isinstance(arms, dict) or len(arms) < 2:
        raise UserError(f"study file {path}: arms must map at least two names to flags, the first the baseline, "
                        f"e.g. arms: {{vanilla: {{}}, lognormal: {{weighting: lognormal}}}}")
    for name, values in arms.items():
        if not isinstance(name, str) or not ARM_NAME.fullmatch(name):
            raise UserError(f"study file {path}: the arm name {name!r} is not a folder name (letters, digits, . _ + -)")
        if not isinstance(values, dict):
            raise UserError(f"study file {path}: the arm {name} must map flag names to values, got {values!r}")


def arm_studies(study) -> dict[str, dict]:
    """{arm: the study of that arm}: its flags (`arm`, over `shared` and `family`), its own report_dir and name."""
    plain = {key: value for key, value in study.items() if key != "arms"}
    return {arm: dict(plain, name=f"{study.get('name', 'study')}: {arm}", arm=values,
                      report_dir=os.path.join(study["report_dir"], arm))
            for arm, values in study["arms"].items()}


def planned_arm_runs(studies: dict[str, dict]) -> list[tuple[dict, str, int]]:
    """Seed by seed, arm by arm: an interrupted study has whole seeds of every arm."""
    first = next(iter(studies.values()))
    return [(studies[arm], model, seed) for seed in first["seeds"] for arm in studies for model in first["models"]]
