"""The automatic evaluations from the command line (esllm/evals/): `register` adds the four commands.

    python -m esllm belebele [--file F.jsonl] [--contestants A B] [--limit 100] [--batch-size 8]
                             [--mode chat|lm-eval] [--template lm-eval|lm-eval-pre-0.4.4]
    python -m esllm judge --session estudio-1 --judge gemma-instrucciones [--criterion general|full|exactitud…]
                          [--retries 2] [--seed 0] [--limit N]
    python -m esllm questions --text-file texto.txt [--contestant gemma-base] [--n 3] [--m 2] [--preset greedy]
    python -m esllm questions --text "El sábado, Lucía…" --n 2 --m 0
    python -m esllm pictos [--file data/pictos/muestra-es.jsonl] [--contestants A B] [--limit 40]
                           [--preset greedy] [--max-new-tokens 40]

Each command checks its input before loading any model, then loads the engine of `--config` (default
configs/default.yaml), upgrades the database of $ESLLM_DATABASE_URL, stores one eval_run row per
contestant (esllm/evals/base.py) and prints a report. Exit code 0, or 1 when a contestant's run failed
(belebele, pictos: it is stored as failed and the others still run); anything the user must fix raises
EsllmError, which `esllm.cli.main` prints and turns into 2. The commands call this module's
`start_engine` (looked up when they run), which tests replace with a fake engine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esllm import EsllmError
from esllm.cli.common import open_store, pick_contestants, progress_bar, start_engine
from esllm.paths import display_path


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"se esperaba un entero, no {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("debe ser al menos 1")
    return n


def register(subparsers) -> None:
    """Add `belebele`, `judge`, `questions` and `pictos` to the `python -m esllm` subparsers."""
    from esllm.engine.presets import PRESETS
    from esllm.evals.belebele import SAMPLE as BELEBELE_SAMPLE
    from esllm.evals.belebele_lmeval import DEFAULT_TEMPLATE as BELEBELE_DEFAULT_TEMPLATE
    from esllm.evals.belebele_lmeval import TEMPLATES as BELEBELE_TEMPLATES
    from esllm.evals.judge import CRITERION_CHOICES
    from esllm.evals.pictos import MAX_NEW_TOKENS
    from esllm.evals.pictos import SAMPLE as PICTOS_SAMPLE
    from esllm.evals.question_checks import SIMILARITY

    b = subparsers.add_parser("belebele", help="multiple-choice reading comprehension benchmark in Belebele format "
                                               "(upgrades the database schema first)")
    b.add_argument("--config", default=None, help="contestants YAML (default configs/default.yaml)")
    b.add_argument("--file", default=str(BELEBELE_SAMPLE),
                   help="Belebele JSONL file (default: the bundled Spanish sample)")
    b.add_argument("--contestants", nargs="*", default=None, help="default: every available contestant")
    b.add_argument("--limit", type=_positive, default=None, help="only the first N questions")
    b.add_argument("--batch-size", type=_positive, default=8, help="questions per forward pass (left padding)")
    b.add_argument("--mode", choices=["chat", "lm-eval"], default="chat",
                   help="chat: the question through each contestant's chat template, letter read next (default); "
                        "lm-eval: lm-evaluation-harness 0.4.13's belebele prompt, no template, log-likelihoods of "
                        "' A'..' D' (acc; comparable with published numbers)")
    b.add_argument("--template", choices=list(BELEBELE_TEMPLATES), default=BELEBELE_DEFAULT_TEMPLATE,
                   help="lm-eval mode only: lm-eval (as lm-eval >= 0.4.4, 'Answer:'; default) or lm-eval-pre-0.4.4 "
                        "(the full-width 'Answer：' of lm-eval <= 0.4.3, to compare with numbers published before)")
    b.set_defaults(func=cmd_belebele)

    j = subparsers.add_parser("judge", help="grade a rating session's answers with a judge model "
                                            "(upgrades the database schema first; resumable)")
    j.add_argument("--session", required=True, help="rating session name or id")
    j.add_argument("--judge", required=True, metavar="CONTESTANT", help="the contestant that grades")
    j.add_argument("--config", default=None, help="contestants file (default configs/default.yaml)")
    j.add_argument("--criterion", default="general", choices=list(CRITERION_CHOICES),
                   help="general (default), one aspect, or full (general and the four aspects)")
    j.add_argument("--retries", type=int, default=2, help="new tries for a reply without a grade (default 2)")
    j.add_argument("--seed", type=int, default=0, help="seed of the judge's A/B/C labels and sampled retries")
    j.add_argument("--limit", type=int, default=None, help="grade at most N items now (the rest next time)")
    j.add_argument("--prompt", choices=["esllm", "estudio"], default="esllm",
                   help="esllm: our Spanish rubric prompt (default); estudio: the study's GPT-4 prompt, verbatim "
                        "(general grade only; grades as its own judge user, juez-estudio-…)")
    j.set_defaults(func=cmd_judge)

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
    q.set_defaults(func=cmd_questions)

    p = subparsers.add_parser("pictos", help="pictogram keywords -> sentence, BLEU and chrF per contestant")
    p.add_argument("--config", default=None, help="contestants YAML (default configs/default.yaml)")
    p.add_argument("--file", default=str(PICTOS_SAMPLE),
                   help="JSONL test set (default data/pictos/muestra-es.jsonl)")
    p.add_argument("--contestants", nargs="*", default=None, help="default: every available contestant")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: each contestant's preset")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help=f"default {MAX_NEW_TOKENS}")
    p.set_defaults(func=cmd_pictos)
    for sub in (b, p):
        sub.add_argument("--resume", action="store_true",
                         help="keep each contestant's finished run of the same file and settings on the same model "
                              "(a stopped run goes on where it stopped)")


def _run_all(evaluation, Session, engine, names, items, unit: str, resume: bool = False) -> list:
    """Every contestant's stored run (esllm.evals.base.run_contestants) with a progress bar on stderr."""
    from esllm.evals.base import run_contestants

    bar, progress = progress_bar(unit)
    try:
        return run_contestants(evaluation, Session, engine, names, items, progress, resume=resume)
    finally:
        bar.close()


def cmd_belebele(args: argparse.Namespace) -> int:
    from esllm.evals.belebele import ACC_NOTE, TABLE_HEADER, Belebele

    Session = open_store()
    evaluation = Belebele(args.file, batch_size=args.batch_size, limit=args.limit, mode=args.mode,
                          template=args.template)
    items = evaluation.load()  # a bad file fails before the model loads
    engine = start_engine(args.config)
    runs = _run_all(evaluation, Session, engine, pick_contestants(engine, args.contestants), items, "pregunta",
                    args.resume)
    mode = f"{args.mode} (plantilla {args.template})" if args.mode == "lm-eval" else args.mode
    print(f"Belebele · modo {mode} · {display_path(args.file)} · {len(items)} preguntas · azar 25 %")
    print("\n".join([TABLE_HEADER] + [evaluation.summary(r) for r in runs] + [ACC_NOTE]))
    return 0 if all(r.status == "done" for r in runs) else 1


def _fmt(x, pct: bool = False) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:.1f} %" if pct else f"{x:.3f}"


def cmd_judge(args: argparse.Namespace) -> int:
    from esllm.evals.judge import Judge

    Session = open_store()
    evaluation = Judge(args.session, criterion=args.criterion, retries=args.retries, seed=args.seed,
                       limit=args.limit, prompt=args.prompt)
    items = evaluation.load(Session)  # an unknown session fails before any model is loaded
    engine = start_engine(args.config)
    bar, progress = progress_bar("respuesta")
    try:
        run = evaluation.run_one(Session, engine, args.judge, items, progress)
    finally:
        bar.close()
    m = run.metrics
    print(evaluation.summary(run))
    print(f"Acuerdo con los humanos sobre {m['n']} unidades ({m['pairs']} pares): exacto {_fmt(m['exact'], True)}, "
          f"±1 {_fmt(m['within_one'], True)}, Spearman {_fmt(m['spearman'])}, alfa ordinal con el juez "
          f"{_fmt(m['alpha'])} (solo humanos {_fmt(m['alpha_humans'])})")
    return 0


def cmd_questions(args: argparse.Namespace) -> int:
    from esllm.evals.question_checks import format_report
    from esllm.evals.questions import Questions, questions_result

    if args.text_file is not None:
        try:
            text = Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise EsllmError(f"No se pudo leer {args.text_file}: {e}") from None
    else:
        text = args.text
    evaluation = Questions(text, args.n, args.m, similarity=args.similarity, preset=args.preset)
    items = evaluation.load()  # a bad request fails before any model is loaded
    Session = open_store()
    engine = start_engine(args.config)
    name = args.contestant or next(iter(engine.available()), None)
    if name is None:
        raise EsllmError("No hay ningún concursante disponible (revise la configuración).")
    r = questions_result(evaluation.run_one(Session, engine, name, items))
    print(f"Concursante: {name} · pedidas {args.n} abiertas + {args.m} V/F · parámetros: {r.params}")
    print("\nSalida del modelo:\n" + "\n".join("  | " + ln for ln in r.raw_output.splitlines()) + "\n")
    print(format_report(r.questions, r.violations))
    print(f"\nGuardado como eval_run #{r.run_id}.")
    return 0


def cmd_pictos(args: argparse.Namespace) -> int:
    from esllm.evals.pictos import Pictos

    evaluation = Pictos(args.file, preset=args.preset, max_new_tokens=args.max_new_tokens)
    items = evaluation.load()
    if args.limit is not None:
        if args.limit < 1:
            raise EsllmError("--limit debe ser 1 o más.")
        items = items[:args.limit]
    if not 1 <= args.max_new_tokens <= 512:
        raise EsllmError("--max-new-tokens debe estar entre 1 y 512.")
    Session = open_store()
    engine = start_engine(args.config)
    runs = _run_all(evaluation, Session, engine, pick_contestants(engine, args.contestants), items, "ítem",
                    args.resume)
    done = [r for r in runs if r.status == "done"]
    print(f"Pictogramas → oración: {Path(args.file).name}, {len(items)} ítems, preset "
          f"{args.preset or 'de cada concursante'}, máx. {args.max_new_tokens} tokens")
    width = max([len(r.contestant) for r in done] + [11])
    print(f"{'concursante':<{width}}  {'BLEU':>6}  {'chrF':>6}  {'n':>4}  run")
    for r in done:
        m = r.metrics
        print(f"{r.contestant:<{width}}  {m['bleu']:6.2f}  {m['chrf']:6.2f}  {m['n']:4d}  #{r.id}")
    if done:
        print(f"BLEU: {done[0].config['bleu_signature']}\nchrF: {done[0].config['chrf_signature']}")
    for r in runs:
        if r.status != "done":
            print(f"error en {r.contestant}: {r.error}", file=sys.stderr)
    return 0 if len(done) == len(runs) else 1
