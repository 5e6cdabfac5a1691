"""The family registry (gen/family.py) is the one place DiT and SiT differ, and gen's modules import each other
without a circle: a family is one entry, and any module can be imported first."""
import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_layering import imported_modules

from common.errors import UserError
from gen.family import FAMILIES, family_named, family_of, make_sampler
from gen.models import create_model
from gen.models.config import FAMILY_NAMES
from gen.settings import TRAINING_SETTINGS, SamplingSettings
from gen.settings.fields import unset

ROOT = Path(__file__).resolve().parents[1]
# where a family's name may be written as a value: the registry, the model layer that names its networks, the two
# scripts, and the Python names of the two training settings classes
NAMES_ALLOWED_IN = {"gen/family.py", "gen/models/config.py", "gen/models/dit.py", "gen/models/__init__.py",
                    "train_dit.py", "train_sit.py", "gen/settings/training.py"}


def source_files():
    return [*sorted((ROOT / "gen").rglob("*.py")),
            *(ROOT / name for name in ("sample.py", "train_dit.py", "train_sit.py", "extract_latents.py"))]


def test_the_registry_holds_every_family_the_models_name():
    assert tuple(FAMILIES) == FAMILY_NAMES
    for name, family in FAMILIES.items():
        assert family.network.family == name and family.script == f"train_{name.lower()}.py"
        assert os.path.isfile(ROOT / family.script)
        assert family.sampler_option in family.sampler_defaults
        assert {field.name for field in dataclasses.fields(family.process_settings)} == set(family.process_defaults)
        settings = TRAINING_SETTINGS[name]
        assert settings.family == name and settings.family_entry() is family
        assert settings().model == family.default_model


def test_a_family_name_is_compared_and_keyed_in_the_registry_only():
    offenders = []
    for path in source_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative in NAMES_ALLOWED_IN:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FAMILY_NAMES:
                offenders.append(f"{relative}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_the_registry_finds_the_family_of_a_model_or_a_name():
    assert family_of(create_model("SiT-Mini/2", input_size=8)) is FAMILIES["SiT"]
    assert family_of(create_model("DiT-Mini/2", input_size=8).config) is FAMILIES["DiT"]
    with pytest.raises(ValueError, match="unknown model family 'EDM'; expected DiT or SiT"):
        family_named("EDM")
    with pytest.raises(ValueError, match="unknown DiT sampler 'ODE'"):
        make_sampler("DiT", "ODE", 10)


def test_another_familys_sampler_option_is_refused_and_the_rest_filled():
    dit, sit = FAMILIES["DiT"], FAMILIES["SiT"]
    settings = unset(SamplingSettings, mode="SDE")
    with pytest.raises(UserError, match="--mode SDE is a SiT flag, but w.safetensors holds a DiT model"):
        dit.fill_from_record(settings, "w.safetensors")
    settings = unset(SamplingSettings, num_sampling_steps=7)
    sit.fill_from_record(settings, "w.safetensors", {"mode": "SDE", "num_sampling_steps": 3, "cfg_scale": 1.5})
    assert (settings.mode, settings.num_sampling_steps, settings.cfg_scale) == ("SDE", 7, 1.5)
    assert settings.sampler == dit.sampler_defaults["sampler"]  # whole: the other family's take their defaults


def gen_module_graph() -> dict[str, set[str]]:
    """{module: gen modules it imports}, lazy imports included; a package counts as its __init__."""
    modules = {}
    for path in sorted((ROOT / "gen").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        is_package = path.name == "__init__.py"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph = {}
    for module, (path, is_package) in modules.items():
        for _, name in imported_modules(path.read_text(), module, is_package):
            while name and name not in modules:  # `from .x import name`: the module x
                name = name.rpartition(".")[0]
            if name and name != module:
                graph.setdefault(module, set()).add(name)
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of `graph` as its modules in order, or [] when there is none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == "open":
                return stack[stack.index(child):] + [child]
            if child not in state and (found := visit(child)):
                return found
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_gen_modules_import_each_other_without_a_circle():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the finder finds one
    assert cycle_in(gen_module_graph()) == []


FIRST_IMPORTS = ["gen.family", "gen.settings.training", "gen.weights", "gen.sampling", "gen.settings.process",
                 "gen.models", "gen.study", "gen.hub.diffusers_format"]


@pytest.mark.e2e  # a fresh interpreter each, all at once (about 20 s on 2 cores): the full tier only
def test_any_module_can_be_imported_first():
    children = {first: subprocess.Popen([sys.executable, "-c", f"import {first}, gen.family; "
                                         "print(sorted(gen.family.FAMILIES))"], cwd=ROOT,
                                        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for first in FIRST_IMPORTS}
    for first, child in children.items():
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0 and stdout.strip() == "['DiT', 'SiT']", (first, stderr[-2000:])
