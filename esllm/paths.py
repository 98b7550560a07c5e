"""Where things live: the repository root and its data folders, computed once; and the file helpers
every layer needs (a path as stored in a record, a name from a user kept inside its folder, a file's sha256,
the lines of a JSONL file)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Optional

from esllm import EsllmError

ROOT = Path(__file__).resolve().parent.parent  # the repository (esllm/ is one level below)
CONFIGS_DIR = ROOT / "configs"
RECIPES_DIR = CONFIGS_DIR / "recipes"
DEFAULT_CONFIG = CONFIGS_DIR / "default.yaml"
DATA_DIR = ROOT / "data"
PROMPTS_DIR = DATA_DIR / "prompts"
BELEBELE_DIR = DATA_DIR / "belebele"
PICTOS_DIR = DATA_DIR / "pictos"
DB_DIR = ROOT / "db"
MIGRATIONS_DIR = DB_DIR / "migrations"


def display_path(path: str | Path) -> str:
    """The path as stored in a record: relative to the repository when inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)


def inside(folder: str | Path, name: object, what: str) -> Path:
    """`folder/name` resolved as the server will open it (`..` collapsed, symlinks followed), if it lies strictly
    inside `folder` (itself resolved); else EsllmError naming `what` («El adaptador de partida»). Every name that
    comes from the UI or the API and becomes a path goes through here: an absolute name, `..`, a symlink out of
    the folder, the folder itself ('', '.') or a NUL byte are refused. It says nothing about whether the path
    exists."""
    base = Path(folder).resolve()
    text = name.strip() if isinstance(name, str) else ""
    if text and "\0" not in text and not Path(text).is_absolute():
        path = (base / text).resolve()
        if path != base and path.is_relative_to(base):
            return path
    raise EsllmError(f"{what} {text!r} no es un nombre dentro de {display_path(base)}/: elija uno de la lista.")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (GGUF files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def jsonl_lines(text: str) -> Iterator[tuple[int, Any, Optional[str]]]:
    """For each non-blank line of a JSONL text: (line number, value, None), or (line number, None, why) when
    the line is not JSON. Readers collect every bad line and refuse the file as a whole."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line), None
        except json.JSONDecodeError as e:
            yield n, None, f"JSON inválido ({e.msg}, columna {e.colno})"
