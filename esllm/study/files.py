"""How the study writes a file (the exports of esllm/study/export.py, the tables of esllm/study/tables.py).

    write_csv(path, header, rows)     # utf-8-sig, every cell through escape_cell, written atomically
    write_jsonl(path, records)        # one JSON object per line, unescaped (training data, not a spreadsheet)
    write_text(path, text)            # any text (Markdown, LaTeX), written atomically

CSV files are UTF-8 with a BOM (`utf-8-sig`), so Excel opens accents right; every string cell that starts
with = + - @ tab or CR gets a leading ' (OWASP's advice against formula injection). Each file is written to a
temporary file in the target folder, flushed to disk and renamed over the old one, so a reader never sees
half a file; a write that fails raises EsllmError and leaves the old file as it was.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from esllm import EsllmError

DANGEROUS_FIRST = ("=", "+", "-", "@", "\t", "\r")
CSV_ENCODING = "utf-8-sig"


def escape_cell(v: Any) -> Any:
    """A string that a spreadsheet would read as a formula gets a leading "'"; anything else is returned as is."""
    if isinstance(v, str) and v.startswith(DANGEROUS_FIRST):
        return "'" + v
    return v


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """`text` written to `path` atomically (a temporary file in the same folder, fsync, rename)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding=encoding, newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise EsllmError(f"No se pudo escribir {path}: {e.strerror or e}. Revise que la carpeta exista, "
                         "que tenga permiso de escritura y que quede espacio en el disco.") from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _cell(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return escape_cell(v)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (CRLF lines) with every header and cell through escape_cell; None and NaN become empty cells."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([escape_cell(h) for h in header])
    for row in rows:
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV file (utf-8-sig, every cell through escape_cell), written atomically."""
    return write_text(path, csv_text(header, rows), CSV_ENCODING)


def write_jsonl(path: Path, records: Iterable[dict]) -> Path:
    """One JSON object per line (UTF-8, no BOM, not escaped), written atomically."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
