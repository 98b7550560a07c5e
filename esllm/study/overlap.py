"""Contamination check: rating prompts that appear, exactly or nearly, in an adapter's training data.

    python -m esllm check-overlap                      # bundled prompt sets × every adapter's training data
    python -m esllm check-overlap --prompts mis.jsonl --data otro/train.json --threshold 0.5
    report = check_overlap(prompt_files, sources)      # plain function; report.findings

A prompt rated by people must not be a training example of a contestant: the adapter would recite what it
learnt, and the table would measure memory. Which data trained which adapter: the `recipe.data.path` recorded in
each adapter's esllm_adapter.json, and the recipes under configs/recipes (`data.path` → `output.dir`), so an
adapter not trained yet is checked too. The held-out `eval_path` is not training data and is not checked.

Texts are compared as lower-case word sequences (NFKC, punctuation dropped), against every text field of every
example (instruction, input, output; or each message of a chat example):
- exact: the prompt's words equal the field's, or appear as one run inside it (prompts of ≥ `MIN_CONTAINED_WORDS`
  words, so "¿Qué es el IVA?" inside a longer question is judged as near, not exact);
- near: word-trigram Jaccard similarity ≥ `threshold` (0.6), or ≥ 80 % of the prompt's trigrams found in the
  field (prompts of ≥ 3 trigrams).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import yaml

from esllm import EsllmError
from esllm.paths import ROOT, display_path, jsonl_lines
from esllm.study.prompts import parse_prompt_file

THRESHOLD = 0.6  # trigram Jaccard at which two texts are near duplicates (same question, a few words changed)
CONTAINMENT = 0.8  # share of the prompt's trigrams found in one field
MIN_CONTAINED_WORDS = 6
N = 3


def words(text: str) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())


def grams(ws: Sequence[str], n: int = N) -> set[tuple[str, ...]]:
    return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}


def _contains(hay: Sequence[str], needle: Sequence[str]) -> bool:
    k = len(needle)
    return any(list(hay[i:i + k]) == list(needle) for i in range(len(hay) - k + 1))


@dataclass(frozen=True)
class Finding:
    kind: str  # "exacta" | "casi"
    score: float  # trigram Jaccard (1.0 for an exact one)
    prompt_file: str
    prompt_id: str
    prompt: str
    data_file: str
    adapters: tuple[str, ...]
    example: int  # 0-based index in the data file
    field: str
    text: str

    def line(self) -> str:
        who = ", ".join(self.adapters) or "—"
        return (f"{self.kind} ({self.score:.2f}) {self.prompt_file} {self.prompt_id}: «{_short(self.prompt)}» ≈ "
                f"{self.data_file} ejemplo {self.example} [{self.field}] «{_short(self.text)}» (adaptadores: {who})")


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


@dataclass
class OverlapReport:
    prompts: int = 0
    examples: int = 0
    sources: dict[str, list[str]] = field(default_factory=dict)  # data file -> adapters trained on it
    findings: list[Finding] = field(default_factory=list)


# ---------------------------------------------------------------- inputs

def training_sources(adapters_dir: Path, recipes_dir: Optional[Path] = None, root: Path = ROOT) -> dict[Path, list[str]]:
    """data file -> names of the adapters trained (or to be trained) on it."""
    out: dict[Path, list[str]] = {}

    def add(path: Optional[str], adapter: str) -> None:
        if not path:
            return
        p = Path(path)
        p = (p if p.is_absolute() else root / p).resolve()
        if adapter not in out.setdefault(p, []):
            out[p].append(adapter)

    for meta in sorted(Path(adapters_dir).glob("*/esllm_adapter.json")):
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a broken folder is `python -m esllm adapters`' business
        add(((data.get("recipe") or {}).get("data") or {}).get("path"), meta.parent.name)
    for recipe in sorted(Path(recipes_dir).glob("*.yaml")) if recipes_dir else []:
        try:
            data = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        target = Path(str((data.get("output") or {}).get("dir") or recipe.stem)).name
        add((data.get("data") or {}).get("path"), target)
    return out


def example_texts(path: Path) -> Iterator[tuple[int, str, str]]:
    """(example index, field name, text) of every text field of an Alpaca JSON (a list, or {"data": [...]}) or a
    chat JSONL (`messages`) training file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        rows: Iterable = (row for _, row, bad in jsonl_lines(text) if not bad)
    else:
        data = json.loads(text)
        rows = data.get("data", []) if isinstance(data, dict) else data
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        if isinstance(row.get("messages"), list):
            for k, m in enumerate(row["messages"]):
                if isinstance(m, dict) and isinstance(m.get("content"), str):
                    yield i, f"messages[{k}].{m.get('role', '?')}", m["content"]
            continue
        for key in ("instruction", "input", "output", "prompt", "completion", "chosen", "rejected"):
            value = row.get(key)
            if isinstance(value, str) and value.strip():
                yield i, key, value
            elif isinstance(value, list):  # TRL's conversational preference format: lists of messages
                for k, m in enumerate(value):
                    if isinstance(m, dict) and isinstance(m.get("content"), str):
                        yield i, f"{key}[{k}].{m.get('role', '?')}", m["content"]


def prompt_texts(path: Path) -> Iterator[tuple[str, str]]:
    """(id, text) of a prompt file (JSONL or CSV, as the importer reads it)."""
    for r in parse_prompt_file(path):
        yield r.id, r.text


# ---------------------------------------------------------------- the check

def compare(prompt: str, text: str, threshold: float = THRESHOLD) -> Optional[tuple[str, float]]:
    """("exacta" | "casi", Jaccard) if `prompt` appears in `text`, else None."""
    pw, tw = words(prompt), words(text)
    if not pw or not tw:
        return None
    if pw == tw or (len(pw) >= MIN_CONTAINED_WORDS and _contains(tw, pw)):
        return "exacta", 1.0
    pg, tg = grams(pw), grams(tw)
    if not pg or not tg:
        return None
    common = len(pg & tg)
    jaccard = common / len(pg | tg)
    if jaccard >= threshold or (len(pg) >= 3 and common / len(pg) >= CONTAINMENT):
        return "casi", jaccard
    return None


def check_overlap(prompt_files: Sequence[Path], sources: dict[Path, list[str]], *,
                  threshold: float = THRESHOLD) -> OverlapReport:
    if not 0 < threshold <= 1:
        raise EsllmError("El umbral de similitud debe estar entre 0 y 1 (p. ej. 0.6).")
    rep = OverlapReport(sources={display_path(p): list(a) for p, a in sources.items()})
    prompts = [(display_path(f), pid, text) for f in prompt_files for pid, text in prompt_texts(Path(f))]
    rep.prompts = len(prompts)
    for data_file, adapters in sources.items():
        if not data_file.is_file():
            raise EsllmError(f"No existe el archivo de entrenamiento {display_path(data_file)} "
                             f"(adaptadores: {', '.join(adapters)}).")
        try:
            fields = list(example_texts(data_file))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EsllmError(f"No se pudo leer {display_path(data_file)}: {e}") from None
        rep.examples += len({i for i, _, _ in fields})
        for pfile, pid, ptext in prompts:
            for i, key, text in fields:
                hit = compare(ptext, text, threshold)
                if hit:
                    rep.findings.append(Finding(hit[0], hit[1], pfile, pid, ptext, display_path(data_file),
                                                tuple(adapters), i, key, text))
    rep.findings.sort(key=lambda f: (f.kind != "exacta", -f.score, f.prompt_file, f.prompt_id))
    return rep
