"""Command line: `python -m esllm COMMAND`.

    python -m esllm check-config configs/default.yaml   # validate a contestants file
    python -m esllm adapters [--config C]               # list adapter folders and why any is unusable
                                                        # (static checks; shape checks need the app)
    python -m esllm train RECIPE.yaml [key=value ...] [--resume]   # train a LoRA adapter
    python -m esllm generate --set general [--contestants A B C] [--attempts 3]  # answers in batch
    python -m esllm users add NAME --role rater|admin [--password-stdin]  # asks twice unless --password-stdin
    python -m esllm users list                          # users of $ESLLM_DATABASE_URL (default db/esllm.sqlite3)
    python -m esllm prompts import FILE.jsonl|.csv --name SET   # add a prompt set (a bad file imports nothing)
    python -m esllm sessions create NAME --set SET --contestants A B C --raters r1 r2 r3 --k 2 \
        [--mode general|full] [--seed N]                # blind rating session over generated answers
    python -m esllm sessions list                       # sessions with each rater's progress
    python -m esllm sessions close NAME
    python -m esllm export SESSION --out DIR [--dpo-threshold 1.0]   # CSV tables, raw scores, answers,
                                                        # dpo.jsonl and kto.jsonl (see esllm/study/export.py)
    python -m esllm belebele [--file F] [--contestants A B]   # Belebele-format multiple choice (bundled sample)
    python -m esllm judge --session S --judge CONTESTANT       # a contestant grades a session; agreement figures
    python -m esllm questions --text-file F --n 3 --m 2        # reading-comprehension questions, checked
    python -m esllm pictos [--file F] [--contestants A B]     # pictogram keywords -> sentence, BLEU and chrF
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esllm import EsllmError

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m esllm", description="esllm command line")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check-config", help="validate a contestants YAML file")
    c.add_argument("config", nargs="?", default=None)
    a = sub.add_parser("adapters", help="list adapter folders and their problems")
    a.add_argument("--config", default=None)
    t = sub.add_parser("train", help="train a LoRA adapter from a recipe (see configs/recipes/)")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.epochs=1 lora.r=8")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    u = sub.add_parser("users", help="manage rater and admin accounts (upgrades the database schema first)")
    usub = u.add_subparsers(dest="users_cmd", required=True)
    ua = usub.add_parser("add", help="add a user")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["rater", "admin"])
    ua.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    usub.add_parser("list", help="list users")
    g = sub.add_parser("generate", help="generate answers for a prompt set (resumable; see esllm/study/answers.py)")
    g.add_argument("--set", required=True, help="prompt set name (bundled: general, tributario-ec)")
    g.add_argument("--contestants", nargs="*", default=None, help="default: every available contestant")
    g.add_argument("--attempts", type=int, default=3)
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--config", default=None)
    pr = sub.add_parser("prompts", help="prompt sets (upgrades the database schema first)")
    prsub = pr.add_subparsers(dest="prompts_cmd", required=True)
    pi = prsub.add_parser("import", help="import a .jsonl or .csv prompt file as a set")
    pi.add_argument("file")
    pi.add_argument("--name", required=True, help="set name (adds missing prompts to an existing set)")
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
    sesub.add_parser("list", help="list sessions with progress per rater")
    scl = sesub.add_parser("close", help="close a session (raters can no longer score it)")
    scl.add_argument("name")
    ex = sub.add_parser("export", help="write a session's results as CSV and JSONL files "
                                       "(upgrades the database schema first)")
    ex.add_argument("session", help="session name or id")
    ex.add_argument("--out", required=True, help="folder for the files (created if missing)")
    ex.add_argument("--dpo-threshold", type=float, default=None,
                    help="least difference of mean general scores for a DPO pair (default 1.0)")
    from esllm.cli import evals as task_cli
    from esllm.evals import belebele, judge

    for evals_module in (belebele, judge, task_cli):  # automatic evaluations register their own commands
        evals_module.add_cli(sub)
    args = p.parse_args(argv)
    if getattr(args, "func", None) is not None:
        return args.func(args)
    if args.cmd in ("prompts", "sessions", "export"):
        return _store_command(args)
    if args.cmd == "generate":
        return _generate(args)
    if args.cmd == "train":
        return _train(args)
    if args.cmd == "users":
        return _users(args)
    from esllm.config import load_config

    try:
        cfg = load_config(args.config)
    except EsllmError as e:
        print(e, file=sys.stderr)
        return 2
    if args.cmd == "check-config":
        print(f"OK: {len(cfg.models)} modelo(s), {len(cfg.contestants)} concursante(s)")
        for ct in cfg.contestants:
            print(f"  - {ct.name}: {ct.model}" + (f" + {ct.adapter}" if ct.adapter else "") + f" [{ct.preset}]")
        return 0
    from esllm.engine.adapters import scan_dir

    infos = scan_dir(cfg.resolve_adapters_dir(ROOT))
    if not infos:
        print(f"No hay carpetas de adaptador en {cfg.resolve_adapters_dir(ROOT)}")
    for info in infos:
        state = "ok" if info.ok else f"ERROR: {info.reason}"
        print(f"{info.name}: {state}" + (f" (r={info.r}, base={info.base_hint})" if info.ok else ""))
    return 0 if all(i.ok for i in infos) else 1


def _train(args) -> int:
    import logging

    from esllm.train.recipe import load_recipe

    logging.basicConfig(level=logging.WARNING)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        from esllm.train.trainer import train

        result = train(recipe, root=ROOT, resume=args.resume)
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


def _generate(args) -> int:
    from tqdm.auto import tqdm

    from esllm.config import load_config
    from esllm.engine import Engine
    from esllm.store import db
    from esllm.study.answers import generate_answers
    from esllm.study.prompts import ensure_bundled_sets

    try:
        Session = db.open_store()
        with Session() as s:
            ensure_bundled_sets(s)
            s.commit()
        engine = Engine(load_config(args.config), root=ROOT, progress=print)
        engine.start()
        names = args.contestants or [c.name for c in engine.contestants.values() if c.available]
        bar = tqdm(total=0, unit="respuesta")

        def progress(done: int, total: int, msg: str) -> None:
            bar.total = total
            bar.n = done
            bar.set_description(msg)
            bar.refresh()

        rep = generate_answers(Session, engine, args.set, names, args.attempts,
                               max_new_tokens=args.max_new_tokens, progress=progress)
        bar.close()
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{rep.generated} generadas, {rep.skipped} ya estaban, {len(rep.errors)} errores (de {rep.total})")
    for e in rep.errors[:20]:
        print("  -", e)
    return 0 if not rep.errors else 1


def _store_command(args) -> int:
    """`prompts import`, `sessions create|list|close` and `export`: one DB session per command."""
    import random

    from esllm.store import db
    from esllm.study import admin

    try:
        Session = db.open_store()
        with Session() as s:
            if args.cmd == "prompts":
                from esllm.study.prompts import import_prompt_set, parse_prompt_file

                name = admin.check_set_name(args.name)
                rows = parse_prompt_file(args.file)
                before = len(admin.prompt_choices(s, name)) if name in admin.set_names(s) else 0
                import_prompt_set(s, name, rows, description=f"importado: {Path(args.file).name}")
                s.commit()
                print(f"Conjunto {name!r}: {len(rows)} prompts en el archivo, {len(rows) - before} nuevos.")
            elif args.cmd == "export":
                from esllm.study.export import DPO_THRESHOLD, write_exports

                threshold = DPO_THRESHOLD if args.dpo_threshold is None else args.dpo_threshold
                paths = write_exports(s, args.session, args.out, dpo_threshold=threshold)
                print(f"Archivos escritos en {Path(args.out).resolve()}:")
                for path in paths.values():
                    print(f"  {path}")
            elif args.sessions_cmd == "create":
                from esllm.study.sessions import create_session

                snaps = admin.resolve_contestants(s, args.set, args.contestants)
                rng = random.Random(args.seed) if args.seed is not None else None
                rs = create_session(s, name=args.name, prompt_set=args.set, contestant_ids=[c.id for c in snaps],
                                    raters=args.raters, k=args.k, rubric_mode=args.mode, rng=rng)
                s.commit()
                print(f"Sesión {rs.name!r} creada: " + _summary_line(
                    next(x for x in admin.list_sessions(s) if x.id == rs.id)))
            elif args.sessions_cmd == "close":
                rs = admin.close_session(s, args.name)
                s.commit()
                print(f"Sesión {rs.name!r} cerrada.")
            else:
                rows = admin.list_sessions(s)
                if not rows:
                    print("No hay sesiones. Cree una con: python -m esllm sessions create …")
                for x in rows:
                    print(_summary_line(x))
        return 0
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _summary_line(x) -> str:
    from esllm.study.admin import STATUS_ES

    return (f"{x.name}\tconjunto={x.set_name}\tmodo={x.mode}\tk={x.k}\t{STATUS_ES.get(x.status, x.status)}\t"
            f"concursantes={','.join(x.contestants)}\tprogreso: {x.progress_text}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("Contraseña: ")
    if getpass.getpass("Repita la contraseña: ") != first:
        raise EsllmError("Las contraseñas no coinciden.")
    return first


def _users(args) -> int:
    from esllm.store import db
    from esllm.store.users import add_user, list_users

    try:
        Session = db.open_store()
        if args.users_cmd == "add":
            password = _read_password(args.password_stdin)
            with Session.begin() as s:
                user = add_user(s, args.name, password, args.role)
                print(f"Usuario {user.name!r} creado ({user.role}).")
            return 0
        with Session() as s:
            users = list_users(s)
            if not users:
                print("No hay usuarios. Cree uno con: python -m esllm users add NOMBRE --role admin")
            for user in users:
                state = "activo" if user.active else "inactivo"
                print(f"{user.name}\t{user.role}\t{state}\t{user.created_at:%Y-%m-%d %H:%M} UTC")
        return 0
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
