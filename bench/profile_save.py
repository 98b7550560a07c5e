"""In-process cost of one «Guardar y seguir» (/evaluar_guardar): server CPU ms and SQL statements per save.

Run from the repository root (CPU, a few seconds; no model, no HTTP, nothing downloaded):

    .venv/bin/python bench/profile_save.py                    # 200 saves, handler and Gradio levels
    .venv/bin/python bench/profile_save.py --saves 200 --profile 25   # + cProfile, top 25 by cumulative time

What it does: builds a fresh SQLite file (WAL, as the app uses it) with --prompts standalone prompts plus
one contextual series of 5 turns, three contestants' answers (canned, tests/test_batch.FakeEngine), one open
session where every rater has every prompt, and the «Evaluar» tab of the real app in a gr.Blocks with
accounts on. Then rater r00 opens the session and saves --saves items one after another, measured at two
levels: "handler" calls the registered /evaluar_guardar function directly (our code: login check, submit,
next item); "gradio" goes through Blocks.process_api (adds Gradio's preprocess of the 17 inputs and
postprocess of the 20 outputs). Printed: CPU ms per save (time.process_time of this process: what else the
machine runs is not counted, though on a busy machine shared caches and cores still inflate it somewhat) and
SQL statements per save (each row of a multi-row INSERT counts: SQLAlchemy sends them one by one on SQLite).

What it does not know: HTTP, the queue and the SSE stream (bench/bench_rating.py measures those); a
single rater, so no lock waits; rubric "general" (3 score rows per save) unless --full.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/profile_save.py` works too

PW = "clave-de-carga-123"
NAMES = ["carga-base", "carga-a1", "carga-a2"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--saves", type=int, default=200, help="saves measured per level (default 200)")
    p.add_argument("--prompts", type=int, default=500, help="standalone prompts in the set (default 500)")
    p.add_argument("--raters", type=int, default=10, help="raters in the session, each with every item")
    p.add_argument("--full", action="store_true", help="rubric 'full' (general + 4 aspects: 15 rows a save)")
    p.add_argument("--profile", type=int, default=0,
                   help="cProfile both levels (wall time, profiler overhead included): top N by cumulative / own time")
    return p.parse_args(argv)


def build(tmp: Path, args):
    """(sessionmaker, engine, session id): prompts, answers, raters, one open session."""
    from sqlalchemy import select

    from esllm.store import db, users
    from esllm.store.models import ContestantSnapshot
    from esllm.study.answers import generate_answers
    from esllm.study.prompts import import_prompt_set, parse_prompts
    from esllm.study.sessions import create_session
    from tests.test_batch import FakeEngine

    rows = [{"id": f"q{i:04d}", "category": "basicas", "text": f"Pregunta {i:04d}: ¿qué es el IVA?"}
            for i in range(args.prompts)]
    rows[5:5] = [{"id": f"s{t}", "category": "contextual", "series": "s1", "turn": t, "text": f"Turno {t}"}
                 for t in range(1, 6)]
    url = f"sqlite:///{tmp / 'save.sqlite3'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    S = db.make_sessionmaker(engine)
    raters = [f"r{i:02d}" for i in range(args.raters)]
    with S() as s:
        for r in raters:
            users.add_user(s, r, PW, "rater")
        import_prompt_set(s, "carga", parse_prompts("\n".join(json.dumps(r) for r in rows), "jsonl"))
        s.commit()
    generate_answers(S, FakeEngine(NAMES), "carga", NAMES, attempts=1)
    with S() as s:
        ids = [s.scalars(select(ContestantSnapshot.id).where(ContestantSnapshot.name == n)).one() for n in NAMES]
        sid = create_session(s, name="carga", prompt_set="carga", contestant_ids=ids, raters=raters,
                             k=args.raters, rubric_mode="full" if args.full else "general",
                             rng=random.Random(0)).id
        s.commit()
    return S, engine, sid


def evaluar_blocks(S):
    """The «Evaluar» tab alone, with accounts on; returns (blocks, {api_name: BlockFunction})."""
    import gradio as gr

    from esllm.ui.context import AppContext
    from esllm.ui.evaluar import build_evaluar

    ctx = AppContext(config=None, engine=None, sessionmaker=S, local_mode=False)
    with gr.Blocks() as demo:
        with gr.Tabs():
            build_evaluar(ctx)
    return demo, {fn.api_name: fn for fn in demo.fns.values()}


def scores_for(rng: random.Random, full: bool) -> list:
    """The 15 radio values /evaluar_guardar takes after the state and the comment."""
    gen = [str(rng.randint(1, 5)) for _ in range(3)]
    asp = [str(rng.randint(1, 5)) if full else None for _ in range(12)]
    return gen + asp


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from sqlalchemy import event

    print(f"esllm save-path profile, {time.strftime('%Y-%m-%d %H:%M:%S')}; load avg "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}; args {vars(args)}")
    with tempfile.TemporaryDirectory(prefix="esllm-save-") as d:
        S, engine, sid = build(Path(d), args)
        demo, fns = evaluar_blocks(S)
        sql: Counter = Counter()
        event.listen(engine, "before_cursor_execute", lambda *a: sql.update(("sql",)))
        req = gr.Request(username="r00", session_hash="bench")
        rng = random.Random(1)

        # ---- handler level: the registered functions, called directly
        opened = fns["evaluar_abrir"].fn(sid, request=req)
        state = opened[0]
        save = fns["evaluar_guardar"].fn
        prof = cProfile.Profile() if args.profile else None
        sql.clear()
        cpu, n = 0.0, 0
        for _ in range(args.saves):
            vals = scores_for(rng, args.full)
            t = time.process_time()
            if prof:
                prof.enable()
            out = save(state, "", *vals, request=req)
            if prof:
                prof.disable()
            cpu += time.process_time() - t
            n += 1
            state = out[0]
            if state is None:
                break
        print(f"handler level: {n} saves, {cpu / n * 1e3:.2f} ms CPU per save, "
              f"{sql['sql'] / n:.1f} SQL statements per save")
        if prof:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(args.profile)
            print(buf.getvalue())

        # ---- Gradio level: through Blocks.process_api (preprocess, handler, postprocess)
        from gradio.state_holder import SessionState

        block_fn = fns["evaluar_guardar"]
        st = SessionState(demo)
        state_id = block_fn.inputs[0]._id
        st[state_id] = state

        prof = cProfile.Profile() if args.profile else None

        async def run() -> tuple[float, int]:
            cpu, n = 0.0, 0
            for _ in range(args.saves):
                vals = scores_for(rng, args.full)
                t = time.process_time()
                if prof:
                    prof.enable()
                await demo.process_api(block_fn, [None, "", *vals], state=st, request=req, session_hash="bench")
                if prof:
                    prof.disable()
                cpu += time.process_time() - t
                n += 1
                if st[state_id] is None:
                    break
            return cpu, n

        sql.clear()
        cpu, n = asyncio.run(run())
        print(f"gradio level:  {n} saves, {cpu / n * 1e3:.2f} ms CPU per save, "
              f"{sql['sql'] / n:.1f} SQL statements per save")
        if prof:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.profile)
            print(buf.getvalue())
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
