"""The package's shape, as docs/ARCHITECTURE.md describes it: layers only import downwards, every module
says what it does, the installable project pins what requirements.txt pins, and `esllm` is a command.

Rules that bite (issue 24): a module has at most 400 lines and a function at most 80 (today's longer ones are
listed with their length and may only shrink), no function imports an esllm module (a deferred import hides a
cycle; only the front end esllm/cli/ may defer, to start fast), and every name is imported from its home: no
module imports an esllm name it does not use (a re-export), and no module imports from an esllm module a name
that module did not define itself.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Iterable, Iterator, Optional

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

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# module:function -> its length in lines today. A listed function may shrink but not grow; once it is at most
# MAX_FUNCTION_LINES long the test asks for its line to be deleted, so this list only gets shorter.
LONG_FUNCTIONS = {
    "esllm.study.answers:generate_answers": 102,
    "esllm.train.pref:train_preference": 176,
    "esllm.train.trainer:train": 206,
    "esllm.ui.administrar:build_administrar": 87,
    "esllm.ui.conversar:build_conversar": 86,
}
LAZY_IMPORTS_ALLOWED = ("esllm/cli/",)  # the command line imports a command's modules when it runs (starts fast)

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


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and method under node, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}.{child.name}" if prefix else child.name
            yield name, child
            yield from _functions(child, name)
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}.{child.name}" if prefix else child.name)
        else:
            yield from _functions(child, prefix)


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def long_functions(paths: Iterable[Path]) -> dict[str, int]:
    """module:function -> lines (def line to last line) of every function longer than MAX_FUNCTION_LINES."""
    out = {}
    for path in paths:
        for name, fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            if (n := fn.end_lineno - fn.lineno + 1) > MAX_FUNCTION_LINES:
                out[f"{_dotted(path)}:{name}"] = n
    return out


def _own_statements(fn: ast.AST) -> Iterator[ast.AST]:
    """Every node of a function's body, not descending into the functions it defines (they have their own entry)."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo += ast.iter_child_nodes(node)


def lazy_esllm_imports(path: Path) -> set[str]:
    """«path:function imports esllm.x» for every import of an esllm module inside a function body."""
    out = set()
    for name, fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
        for node in _own_statements(fn):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "esllm":
                out |= {f"{_rel(path)}:{name} imports "
                        + (f"{node.module}.{a.name}" if _module_file(f"{node.module}.{a.name}") else node.module)
                        for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {f"{_rel(path)}:{name} imports {a.name}" for a in node.names if a.name.split(".")[0] == "esllm"}
    return out


def _module_file(module: str) -> Optional[Path]:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if (base / "__init__.py").is_file() else (
        base.with_suffix(".py") if base.with_suffix(".py").is_file() else None)


def defined_names(module: str) -> set[str]:
    """Names a module binds at its top level other than by importing them from esllm (plus a package's
    submodules): what may be imported from it."""
    path = _module_file(module)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "esllm":
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
    if path.name == "__init__.py":
        out |= {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir() if p.is_dir()}
    return out


def _used_names(tree: ast.AST) -> set[str]:
    """Names read anywhere in the module, quoted annotations included; `__all__` does not count as a use."""
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
    for node in ast.walk(tree):
        notes = [getattr(node, "annotation", None), getattr(node, "returns", None)]
        for note in notes:
            if isinstance(note, ast.Constant) and isinstance(note.value, str):
                used |= {n.id for n in ast.walk(ast.parse(note.value, mode="eval")) if isinstance(n, ast.Name)}
    return used


def import_offences(path: Path) -> set[str]:
    """An esllm name imported and never used here (a re-export), or imported from a module that did not define it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used, out = _used_names(tree), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "esllm":
            for a in node.names:
                if (a.asname or a.name) not in used:
                    out.add(f"{_rel(path)} re-exports {node.module}.{a.name}")
                if a.name not in defined_names(node.module):
                    out.add(f"{_rel(path)} imports {a.name} from {node.module}, which does not define it")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "esllm" and (a.asname or "esllm") not in used:
                    out.add(f"{_rel(path)} re-exports {a.name}")
    return out


def test_modules_are_at_most_400_lines():
    long = {_rel(p): n for p in modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by responsibility): {long}"


def test_functions_are_at_most_80_lines_and_the_long_list_only_shrinks():
    found = long_functions(modules())
    new = {f: n for f, n in found.items() if f not in LONG_FUNCTIONS}
    grew = {f: (LONG_FUNCTIONS[f], n) for f, n in found.items() if f in LONG_FUNCTIONS and n > LONG_FUNCTIONS[f]}
    done = sorted(set(LONG_FUNCTIONS) - set(found))
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines: {new}"
    assert not grew, f"listed long functions that grew (listed, now): {grew}"
    assert not done, f"now at most {MAX_FUNCTION_LINES} lines: delete them from LONG_FUNCTIONS: {done}"


def test_no_function_imports_an_esllm_module():
    found = set().union(*(lazy_esllm_imports(p) for p in modules() if not _rel(p).startswith(LAZY_IMPORTS_ALLOWED)))
    wrong = sorted(f"lazy: {o}" for o in found)
    assert not wrong, ("imports of esllm modules inside functions (import at the top; if that makes a cycle, move "
                       "the code to where it belongs):\n" + "\n".join(wrong))


def test_every_name_is_imported_from_its_home():
    found = set().union(*(import_offences(p) for p in modules()))
    wrong = sorted(f"import: {o}" for o in found)
    assert not wrong, "\n".join(wrong)


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


# ---------------------------------------------------------------------------------------------- the engine's shape
ENGINE = PKG / "engine"
MAX_ENGINE_METHODS = 15
# The kinds of base a registry holds: nothing outside registry.py may ask "which one are you?"
BACKEND_CLASSES = {"Backend", "LlamaCppBackend", "TransformersBackend", "RemoteModel", "LoadedModel", "LocalRunner",
                   "RemoteRunner"}


def _classes(path: Path) -> Iterator[ast.ClassDef]:
    yield from (n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.ClassDef))


def test_the_engine_facade_is_thin_and_no_engine_class_has_more_than_15_methods():
    (engine,) = [c for c in _classes(ENGINE / "core.py") if c.name == "Engine"]
    assert engine.end_lineno - engine.lineno + 1 <= 100, "Engine is a façade: its logic belongs to a runner or the registry"
    big = {f"{_rel(p)}:{c.name}": n for p in sorted(ENGINE.glob("*.py")) for c in _classes(p)
           if (n := sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in c.body)) > MAX_ENGINE_METHODS}
    assert not big, f"engine classes over {MAX_ENGINE_METHODS} methods (split by responsibility): {big}"


def test_no_code_asks_a_backend_which_class_it_is():
    """Callers use what a base or runner declares (capabilities, unavailable_reason, runner()), never isinstance."""
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "type"):
                names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for a in node.args[1:]
                         for n in ast.walk(a)}
                if names & BACKEND_CLASSES:
                    found.append(f"{_rel(path)}:{node.lineno}")
    assert not found, f"isinstance on backend classes: {found}"


def test_the_tests_fake_engine_implements_the_runner_protocol():
    """The fake runner of tests/helpers.py is what a new backend writes: every member of runner.Runner and of
    runner.LoadedModel, and nothing of the engine's logic copied (FakeEngine only records calls, then defers)."""
    import inspect

    from esllm.engine.core import Engine
    from esllm.engine.runner import LoadedModel, Runner
    from tests.helpers import FakeEngine, FakeModel, FakeRunner

    def members(proto) -> set[str]:
        return {n for n in vars(proto) if not n.startswith("_")} | set(getattr(proto, "__annotations__", {}))

    for proto, impl in ((Runner, FakeRunner), (LoadedModel, FakeModel)):
        fake = impl.__init__  # instance attributes are set there
        missing = {m for m in members(proto) if not hasattr(impl, m) and f"self.{m}" not in inspect.getsource(fake)}
        assert not missing, f"{impl.__name__} lacks {missing} of {proto.__name__}"
    own = {n for n, v in vars(FakeEngine).items() if callable(v) and not n.startswith("__")}
    assert own <= {"stream", "generate_many"} and own <= set(vars(Engine)), own
