"""The rating study from the command line: `generate` (answers in batch), `prompts import`,
`sessions create|list|close`, `export` and `check-overlap` (esllm/study/). One database session per command; the writes
are the same functions «Administrar» calls (esllm/study/admin.py)."""

from __future__ import annotations

import random
from pathlib import Path

from esllm.cli.common import open_store, progress_bar, start_engine


def register(sub) -> None:
    g = sub.add_parser("generate", help="generate answers for a prompt set (resumable; see esllm/study/answers.py)")
    g.add_argument("--set", required=True, help="prompt set name (bundled: general, tributario-ec)")
    g.add_argument("--contestants", nargs="*", default=None, help="default: every available contestant")
    g.add_argument("--attempts", type=int, default=3)
    g.add_argument("--vary", nargs="+", default=None, metavar="PRESET[:k=v,…]",
                   help="how attempts 2..N differ in this run, in turn, seed = attempt number: e.g. --vary top-p, or "
                        "--vary top-k:temperature=0.8 beam (default: each contestant's vary_attempts in the config; "
                        "a deterministic preset with --attempts > 1 and no variation is refused)")
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--config", default=None)
    g.set_defaults(func=cmd_generate)

    pr = sub.add_parser("prompts", help="prompt sets (upgrades the database schema first)")
    prsub = pr.add_subparsers(dest="prompts_cmd", required=True)
    pi = prsub.add_parser("import", help="import a .jsonl or .csv prompt file as a set")
    pi.add_argument("file")
    pi.add_argument("--name", required=True, help="set name (adds missing prompts to an existing set)")
    pi.set_defaults(func=cmd_prompts_import)

    se = sub.add_parser("sessions", help="blind rating sessions (upgrades the database schema first)")
    sesub = se.add_subparsers(dest="sessions_cmd", required=True)
    sc = sesub.add_parser("create", help="create a session over the answers made by `generate`")
    sc.add_argument("name")
    sc.add_argument("--set", required=True, help="prompt set")
    sc.add_argument("--contestants", nargs=3, required=True, metavar="NAME",
                    help="three contestant names; each resolves to its latest snapshot with answers for the whole set")
    sc.add_argument("--raters", nargs="+", required=True)
    sc.add_argument("--k", type=int, required=True, help="raters per item")
    sc.add_argument("--mode", choices=["general", "full"], default="general",
                    help="general: one 1-5 score per answer; full: also the four aspects")
    sc.add_argument("--seed", type=int, default=None, help="seed of the blind assignment (default: random)")
    sc.set_defaults(func=cmd_sessions_create)
    sesub.add_parser("list", help="list sessions with progress per rater").set_defaults(func=cmd_sessions_list)
    scl = sesub.add_parser("close", help="close a session (raters can no longer score it)")
    scl.add_argument("name")
    scl.set_defaults(func=cmd_sessions_close)

    ov = sub.add_parser("check-overlap", help="rating prompts that appear (exactly or nearly) in an adapter's "
                                             "training data; exit 1 if any (esllm/study/overlap.py)")
    ov.add_argument("--prompts", nargs="+", default=None, metavar="FILE",
                    help="prompt files (.jsonl/.csv; default: the bundled sets, data/prompts/*.jsonl)")
    ov.add_argument("--data", nargs="+", default=None, metavar="FILE",
                    help="training files to check instead of those of the adapters and recipes")
    ov.add_argument("--adapters-dir", default=None, help="adapter folders (default: adapters/)")
    ov.add_argument("--threshold", type=float, default=None, help="word-trigram Jaccard of a near duplicate (0.6)")
    ov.set_defaults(func=cmd_check_overlap)

    ex = sub.add_parser("export", help="write a session's results as CSV and JSONL files, and the study's tables as "
                                       "wide CSV, Markdown and LaTeX (upgrades the database schema first)")
    ex.add_argument("session", nargs="?", default=None, help="session name or id")
    ex.add_argument("--out", required=True, help="folder for the files (created if missing)")
    ex.add_argument("--set", dest="set_name", default=None,
                    help="also the study's table over every session of this prompt set (tabla_conjunto.*)")
    ex.add_argument("--belebele", choices=["lm-eval", "chat"], default=None,
                    help="also Table 5 from the stored Belebele runs of this mode (tabla_belebele.*)")
    ex.add_argument("--dpo-threshold", type=float, default=None,
                    help="least difference of mean general scores for a DPO pair (default 1.0)")
    ex.set_defaults(func=cmd_export)


def cmd_generate(args) -> int:
    from esllm.study.answers import generate_answers
    from esllm.study.attempts import parse_vary
    from esllm.study.prompts import ensure_bundled_sets

    vary = parse_vary(" ".join(args.vary or []))  # a malformed --vary fails before the models load
    Session = open_store()
    with Session() as s:
        ensure_bundled_sets(s)
        s.commit()
    engine = start_engine(args.config, progress=print)
    names = args.contestants or engine.available()  # an unknown name is an error of its own answers
    bar, progress = progress_bar("respuesta")
    rep = generate_answers(Session, engine, args.set, names, args.attempts, vary=vary,
                           max_new_tokens=args.max_new_tokens, progress=progress)
    bar.close()
    print(f"{rep.generated} generadas, {rep.skipped} ya estaban, {len(rep.errors)} errores (de {rep.total})")
    for e in rep.errors[:20]:
        print("  -", e)
    return 0 if not rep.errors else 1


def cmd_prompts_import(args) -> int:
    from esllm.study import admin

    with open_store()() as s:
        done = admin.import_prompts(s, args.name, args.file, description=f"importado: {Path(args.file).name}")
        s.commit()
    print(done.message)
    return 0


def summary_line(x) -> str:
    from esllm.study.admin import STATUS_ES

    return (f"{x.name}\tconjunto={x.set_name}\tmodo={x.mode}\tk={x.k}\t{STATUS_ES.get(x.status, x.status)}\t"
            f"concursantes={','.join(x.contestants)}\tprogreso: {x.progress_text}")


def cmd_sessions_create(args) -> int:
    from esllm.study import admin

    with open_store()() as s:
        rs = admin.create_named_session(
            s, name=args.name, set_name=args.set, contestants=args.contestants, raters=args.raters, k=args.k,
            mode=args.mode, rng=random.Random(args.seed) if args.seed is not None else None)
        s.commit()
        print(f"Sesión {rs.name!r} creada: " + summary_line(next(x for x in admin.list_sessions(s) if x.id == rs.id)))
    return 0


def cmd_sessions_list(args) -> int:
    from esllm.study import admin

    with open_store()() as s:
        rows = admin.list_sessions(s)
    if not rows:
        print("No hay sesiones. Cree una con: python -m esllm sessions create …")
    for x in rows:
        print(summary_line(x))
    return 0


def cmd_sessions_close(args) -> int:
    from esllm.study import admin

    with open_store()() as s:
        rs = admin.close_session(s, args.name)
        s.commit()
        print(f"Sesión {rs.name!r} cerrada.")
    return 0


def cmd_export(args) -> int:
    from esllm import EsllmError
    from esllm.study import tables
    from esllm.study.export import DPO_THRESHOLD, write_exports

    if not (args.session or args.set_name or args.belebele):
        raise EsllmError("Indique una sesión, --set CONJUNTO o --belebele MODO.")
    threshold = DPO_THRESHOLD if args.dpo_threshold is None else args.dpo_threshold
    out = Path(args.out)
    with open_store()() as s:
        paths = write_exports(s, args.session, out, dpo_threshold=threshold) if args.session else {}
        if args.set_name or args.belebele:
            out.mkdir(parents=True, exist_ok=True)
        if args.set_name:
            paths.update(tables.write_table(set_grid(s, args.set_name), out, "tabla_conjunto"))
        if args.belebele:
            from esllm.evals.belebele_table import belebele_grid

            grid = belebele_grid(s, args.belebele)
            paths.update(tables.write_table(grid, out, "tabla_belebele"))
            print(tables.to_markdown(grid))
    print(f"Archivos escritos en {Path(args.out).resolve()}:")
    for path in paths.values():
        print(f"  {path}")
    return 0


def set_grid(s, set_name: str):
    """The study's plain table over every session of a prompt set (humans only)."""
    from sqlalchemy import select

    from esllm import EsllmError
    from esllm.store.models import PromptSet
    from esllm.study import tables
    from esllm.study.export import set_labels_and_order
    from esllm.study.results import prompt_set_scores_frame

    df = prompt_set_scores_frame(s, set_name)
    if df.empty:
        raise EsllmError(f"El conjunto {set_name!r} aún no tiene puntuaciones.")
    ps = s.scalars(select(PromptSet).where(PromptSet.name == set_name)).one()
    labels, order = set_labels_and_order(s, ps.id)
    return tables.plain_table(df, labels=labels, order=order, title=set_name)


def cmd_check_overlap(args) -> int:
    from esllm.paths import CONFIGS_DIR, PROMPTS_DIR, ROOT, display_path
    from esllm.study import overlap

    prompts = [Path(p) for p in args.prompts] if args.prompts else sorted(PROMPTS_DIR.glob("*.jsonl"))
    if args.data:
        sources = {Path(p).resolve(): ["(--data)"] for p in args.data}
    else:
        sources = overlap.training_sources(Path(args.adapters_dir or ROOT / "adapters"), CONFIGS_DIR / "recipes")
    rep = overlap.check_overlap(prompts, sources, threshold=args.threshold or overlap.THRESHOLD)
    print(f"{rep.prompts} prompts ({', '.join(display_path(p) for p in prompts)}) frente a {rep.examples} ejemplos "
          "de entrenamiento:")
    for data_file, adapters in rep.sources.items():
        print(f"  {data_file} → {', '.join(adapters)}")
    if not rep.findings:
        print("Sin coincidencias: ningún prompt aparece en los datos de entrenamiento.")
        return 0
    print(f"{len(rep.findings)} coincidencia(s); reescriba esos prompts o quite esos ejemplos y reentrene:")
    for f in rep.findings:
        print("  - " + f.line())
    return 1
