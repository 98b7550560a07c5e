"""What the command-line commands share: the started engine, the store, a progress bar, contestant lists.

Commands raise EsllmError for anything the user must fix; `esllm.cli.main` prints it and exits with 2.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from esllm import EsllmError
from esllm.paths import ROOT


def start_engine(config_path: Optional[str], progress: Callable[[str], None] | None = None):
    """The started engine of a contestants file (default configs/default.yaml); tests replace this function."""
    from esllm.engine.config import load_config
    from esllm.engine.core import Engine

    engine = Engine(load_config(config_path), root=ROOT,
                    progress=progress or (lambda m: print(m, file=sys.stderr)))
    engine.start()
    return engine


def open_store():
    """The session factory of $ESLLM_DATABASE_URL (default db/esllm.sqlite3), schema upgraded to head."""
    from esllm.store import db

    return db.open_store()


def pick_contestants(engine, requested: Optional[Sequence[str]]) -> list[str]:
    """`requested` (each checked: an unknown or unavailable name stops before any generation), or every
    available contestant, saying on stderr which ones are left out and why."""
    if requested:
        for name in requested:
            engine.contestant(name)
        return list(requested)
    for c in engine.contestants.values():
        if not c.available:
            print(f"(no disponible, se omite: {c.name}: {c.reason})", file=sys.stderr)
    names = engine.available()
    if not names:
        raise EsllmError("No hay ningún concursante disponible (revise la configuración).")
    return names


def progress_bar(unit: str):
    """A tqdm bar and the `progress(done, total, msg)` callback the library's long jobs take."""
    from tqdm.auto import tqdm

    bar = tqdm(total=0, unit=unit)

    def progress(done: int, total: int, msg: str = "") -> None:
        bar.total, bar.n = total, done
        if msg:
            bar.set_description(msg)
        bar.refresh()

    return bar, progress
