"""The packages depend one way: gen (models, training, sampling) uses fid (scoring) and common; fid uses common
only; common uses neither. Every import is read, lazy ones inside functions too."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"fid": {"gen"}, "common": {"gen", "fid"}}


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, the source of `module`; relative imports are
    resolved against it, and importlib.import_module("...") / __import__("...") with a literal name count too."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level - 1 <= len(package) else []
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            if not node.module:  # `from . import x` may name a module
                found += [(node.lineno, f"{name}.{alias.name}" if name else alias.name) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if called in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(package: str) -> list[str]:
    """`file:line imports name` for every import of a package that `package` must not use."""
    bad = []
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no .py files under {package}/"
    for path in files:
        relative = path.relative_to(ROOT)
        is_package = path.name == "__init__.py"
        parts = relative.with_suffix("").parts
        module = ".".join(parts[:-1] if is_package else parts)
        for line, name in imported_modules(path.read_text(), module, is_package):
            if name.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{relative}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_is_below_it(package):
    assert violations(package) == []


def test_the_import_reader_finds_every_form_of_import():
    source = ("import gen\nimport os, gen.files as files\nfrom gen.cli import run_command\n"
              "def f():\n    from gen import data\n    import importlib\n    importlib.import_module('gen.errors')\n"
              "from .. import gen\nfrom ..gen.files import atomic_open\nfrom .errors import FIDError\n")
    names = [name for _, name in imported_modules(source, "fid.cli")]
    assert sorted(n for n in names if n.split(".")[0] == "gen") == ["gen", "gen", "gen", "gen.cli", "gen.errors",
                                                                     "gen.files", "gen.files"]
    assert "fid.errors" in names and "os" in names
    assert imported_modules("from . import cli\n", "fid", is_package=True) == [(1, "fid"), (1, "fid.cli")]


def test_importing_fid_loads_nothing_of_gen():
    code = ("import fid.pipeline, fid.cli, fid.digits, fid.report, fid.reference; import sys; "
            "print([m for m in sys.modules if m == 'gen' or m.startswith('gen.')])")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
