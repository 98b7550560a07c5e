"""Command-line entry points of the task evaluations (registered by `add_cli` on `python -m esllm`):

    python -m esllm questions --text-file texto.txt [--contestant gemma-base] [--n 3] [--m 2]
    python -m esllm questions --text "El sábado, Lucía…" --n 2 --m 0 [--preset greedy]
    python -m esllm pictos [--file data/pictos/muestra-es.jsonl] [--contestants A B] [--limit 40]
                           [--preset greedy] [--max-new-tokens 40]

Each loads the engine of `--config` (default configs/default.yaml), upgrades the database of
$ESLLM_DATABASE_URL, stores one eval_run row per contestant and prints a report. Exit code 0, 1 when a
contestant failed (pictos), 2 on a usage or input error (message on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esllm import EsllmError

ROOT = Path(__file__).resolve().parents[2]


def add_cli(subparsers) -> None:
    """Register `questions` and `pictos` on an argparse subparsers object."""
    from esllm.engine.presets import PRESETS
    from esllm.evals.pictos import MAX_NEW_TOKENS, SAMPLE
    from esllm.evals.questions import SIMILARITY

    q = subparsers.add_parser("questions", help="reading-comprehension questions from a Spanish text "
                                                "(checked: counts, no answers, no duplicates)")
    q.add_argument("--config", default=None, help="contestants YAML (default configs/default.yaml)")
    q.add_argument("--contestant", default=None, help="default: the first available contestant")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--text-file", help="UTF-8 file with the text")
    src.add_argument("--text", help="the text itself")
    q.add_argument("--n", type=int, default=3, help="short-answer questions (0-10, default 3)")
    q.add_argument("--m", type=int, default=2, help="true/false statements (0-10, default 2)")
    q.add_argument("--similarity", type=float, default=SIMILARITY,
                   help=f"near-duplicate threshold, difflib ratio (default {SIMILARITY})")
    q.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: the contestant's preset")
    q.set_defaults(func=run_questions_cli)

    p = subparsers.add_parser("pictos", help="pictogram keywords -> sentence, BLEU and chrF per contestant")
    p.add_argument("--config", default=None, help="contestants YAML (default configs/default.yaml)")
    p.add_argument("--file", default=str(SAMPLE), help="JSONL test set (default data/pictos/muestra-es.jsonl)")
    p.add_argument("--contestants", nargs="*", default=None, help="default: every available contestant")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: each contestant's preset")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help=f"default {MAX_NEW_TOKENS}")
    p.set_defaults(func=run_pictos_cli)


def start_engine(config_path):
    """The started engine of a config (tests replace this function)."""
    from esllm.config import load_config
    from esllm.engine import Engine

    engine = Engine(load_config(config_path), root=ROOT, progress=lambda m: print(m, file=sys.stderr))
    engine.start()
    return engine


def _available(engine) -> list[str]:
    return [c.name for c in engine.contestants.values() if c.available]


def run_questions_cli(args: argparse.Namespace) -> int:
    from esllm.evals.questions import check_request, format_report, run_questions
    from esllm.store import db

    try:
        if args.text_file is not None:
            try:
                text = Path(args.text_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise EsllmError(f"No se pudo leer {args.text_file}: {e}") from None
        else:
            text = args.text
        check_request(text, args.n, args.m, args.similarity)  # before loading any model
        Session = db.open_store()
        engine = start_engine(args.config)
        name = args.contestant or next(iter(_available(engine)), None)
        if name is None:
            raise EsllmError("No hay ningún concursante disponible (revise la configuración).")
        engine.contestant(name)
        with Session() as s:
            r = run_questions(s, engine, name, text, args.n, args.m, similarity=args.similarity, preset=args.preset)
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Concursante: {name} · pedidas {args.n} abiertas + {args.m} V/F · parámetros: {r.params}")
    print("\nSalida del modelo:\n" + "\n".join("  | " + ln for ln in r.raw_output.splitlines()) + "\n")
    print(format_report(r.questions, r.violations))
    print(f"\nGuardado como eval_run #{r.run_id}.")
    return 0


def run_pictos_cli(args: argparse.Namespace) -> int:
    from esllm.evals.pictos import load_pictos, run_pictos
    from esllm.store import db

    try:
        items = load_pictos(args.file)
        if args.limit is not None:
            if args.limit < 1:
                raise EsllmError("--limit debe ser 1 o más.")
            items = items[:args.limit]
        if not 1 <= args.max_new_tokens <= 512:
            raise EsllmError("--max-new-tokens debe estar entre 1 y 512.")
        Session = db.open_store()
        engine = start_engine(args.config)
        names = args.contestants or _available(engine)
        if not names:
            raise EsllmError("No hay ningún concursante disponible (revise la configuración).")
        for name in names:
            engine.contestant(name)  # an unknown or unavailable name stops before any generation
        missing = [c.name for c in engine.contestants.values() if not c.available and not args.contestants]
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for m in missing:
        print(f"(no disponible, se omite: {m}: {engine.contestants[m].reason})", file=sys.stderr)
    results, failed = [], []
    with Session() as s:
        for name in names:
            def progress(done: int, total: int, name=name) -> None:
                print(f"\r{name}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

            try:
                r = run_pictos(s, engine, name, items, file=args.file, preset=args.preset,
                               max_new_tokens=args.max_new_tokens, progress=progress)
            except EsllmError as e:
                failed.append((name, str(e)))
                continue
            results.append(r)
    print(f"Pictogramas → oración: {Path(args.file).name}, {len(items)} ítems, preset "
          f"{args.preset or 'de cada concursante'}, máx. {args.max_new_tokens} tokens")
    width = max([len(r.contestant) for r in results] + [11])
    print(f"{'concursante':<{width}}  {'BLEU':>6}  {'chrF':>6}  {'n':>4}  run")
    for r in results:
        print(f"{r.contestant:<{width}}  {r.bleu:6.2f}  {r.chrf:6.2f}  {r.n:4d}  #{r.run_id}")
    if results:
        print(f"BLEU: {results[0].bleu_signature}\nchrF: {results[0].chrf_signature}")
    for name, err in failed:
        print(f"error en {name}: {err}", file=sys.stderr)
    return 1 if failed else 0
