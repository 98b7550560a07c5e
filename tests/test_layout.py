"""The package's shape, as docs/ARCHITECTURE.md describes it: layers only import downwards, every module
says what it does, the installable project pins what requirements.txt pins, and `esllm` is a command."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from esllm.paths import ROOT

PKG = ROOT / "esllm"
# layer -> the esllm layers it may import (itself always); esllm/__init__ and paths.py are for all
MAY_IMPORT = {
    "store": set(),
    "engine": set(),
    "train": {"engine"},
    "study": {"store", "engine"},
    "evals": {"store", "study", "engine"},
    "ui": {"store", "study", "evals", "engine"},
    "cli": {"store", "study", "evals", "engine", "train"},
}
SHARED = {"esllm", "esllm.paths"}


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def esllm_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "esllm":
                out |= {f"esllm.{a.name}" if a.name != "EsllmError" else "esllm" for a in node.names}
            elif node.module.startswith("esllm."):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("esllm")}
    return out


def test_layers_import_only_downwards():
    wrong = []
    for path in modules():
        rel = path.relative_to(PKG).parts
        if len(rel) == 1:
            continue  # esllm/__init__, __main__, paths
        layer = rel[0]
        allowed = MAY_IMPORT[layer] | {layer}
        for mod in esllm_imports(path):
            if mod in SHARED:
                continue
            target = mod.split(".")[1]
            if target not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_every_module_has_a_docstring_and_no_missing_design_reference():
    missing, cites = [], []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        if not ast.get_docstring(ast.parse(text)) and path.name != "__init__.py" or (
                path.name == "__init__.py" and text.strip() and not ast.get_docstring(ast.parse(text))):
            missing.append(str(path.relative_to(ROOT)))
        if "DESIGN.md" in text:  # not in this repository: the architecture is docs/ARCHITECTURE.md
            cites.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules without a docstring: {missing}"
    assert not cites, f"modules citing DESIGN.md: {cites}"


def test_architecture_doc_names_every_package():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for pkg in MAY_IMPORT:
        assert f"esllm/{pkg}/" in doc, pkg


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name.lower())] = version.split()[0] if version else version  # options after the pin
    return out


def test_project_dependencies_match_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    req = _pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert _pins(project["dependencies"]) == req
    assert all(v for v in req.values()), "every requirement is pinned with =="


def test_console_script_is_the_cli_main():
    from esllm.cli import main

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    module, _, attr = project["scripts"]["esllm"].partition(":")
    mod = __import__(module, fromlist=[attr])
    assert getattr(mod, attr) is main


def test_evals_have_no_function_level_esllm_imports_and_no_re_exports():
    """esllm/evals/ imports every esllm name at the top, from its home (issue 24): a function-level import would
    hide an import circle, and a name imported only to be imported from here again is a shim."""
    for path in sorted((PKG / "evals").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                         [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                assert not any(n == "esllm" or n.startswith("esllm.") for n in names), \
                    f"{path.name}:{node.lineno}: function-level import of {names}"
        assert "noqa: F401" not in path.read_text(encoding="utf-8"), f"{path.name} re-exports a name"
