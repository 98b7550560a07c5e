"""Rating-load benchmark: simulated raters save items through the real app's HTTP API, then every saved row is checked.

Run from the repository root (CPU; a tiny random Llama is built in-process, nothing is downloaded):

    .venv/bin/python bench/bench_rating.py                   # 10, 50 and 200 raters, 2 s of reading per item
    .venv/bin/python bench/bench_rating.py --think 0         # saturation: every rater saves as fast as it can
    .venv/bin/python bench/bench_rating.py --seconds 10 --prompts 100 --phases 10,50
    .venv/bin/python bench/bench_rating.py | tee bench/results/rating_cpu.txt

What it does: builds the tiny Llama of tests/tiny.py with two random LoRA adapters (three contestants),
starts the app as app.py does (app.create + launch_kwargs, so with accounts Gradio's login guards every
call) on a fresh SQLite file, imports a generated set of --prompts standalone prompts, generates the
answers with esllm.study.answers.generate_answers (1 attempt), and creates one session with raters
r000..r199 where each prompt goes to --overlap raters (default: all, so no one runs out). Then one phase per
entry of --phases (10, 50, 200 raters at once; later phases go on from where earlier ones left each rater).
The clients are cheap, so they measure the server and not themselves: every rater of a phase is a coroutine
of one asyncio loop in a spawned child process (its own GIL, its CPU measured apart), with its own
httpx.AsyncClient logged in through POST /login before the clock starts, speaking the queue protocol a
browser tab speaks (GradioQueue: /gradio_api/queue/join, then the server-sent events of
/gradio_api/queue/data; the rater's gr.State lives server-side under its session hash). Each rater opens the
session (/evaluar_abrir), then again and again waits --think seconds on average (exponential: a person reading
three answers; 0 = no wait, a saturation test) and saves the item shown with random 1-5 scores
(/evaluar_guardar, the «Guardar y seguir» call). Printed per phase: saves/s, p50/p95/max latency of
/evaluar_guardar as the client sees it, errors, whether the next item shown was always the next position,
SQL statements per save and CPU (server, clients, anything else). At the end every client's successful saves
are compared with the database: each (assignment, answer, criterion) must be there exactly once with the
value sent; lost (sent, missing or another value) and duplicated (count > 1) must both be zero; "extra" counts
rows the server kept for a save the client saw fail.

What it does not know: clients and server still share the machine's 2 cores (the client process's CPU is
printed: a few ms per save); anything else running moves the numbers (each phase prints the load average
and the cores other processes used); the SQLite file is on whatever disk the temp folder is; the first
open of every rater of a phase arrives at the same instant (a burst no class produces: it is in the
/evaluar_abrir line, and the first saves wait behind it); saves with aspects (rubric "full") write 15 rows
instead of 3 and are not measured (see bench/profile_save.py --full for the in-process cost); SQLite only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/bench_rating.py` works too

from bench.common import _cpu_seconds, header, no_progress_bars  # noqa: E402

PW = "clave-de-carga-123"
CONTESTANTS = ["carga-base", "carga-a1", "carga-a2"]
TOPICS = ["el RUC", "el IVA", "el impuesto a la renta", "la factura electrónica", "las retenciones",
          "el anticipo", "los gastos personales", "el RISE", "las multas", "la devolución del IVA"]
POSITION = re.compile(r"Ítem (\d+) / (\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=200, help="generated prompts in the set (default 200)")
    p.add_argument("--raters", type=int, default=200, help="raters r000..rNNN in the session (default 200)")
    p.add_argument("--overlap", type=int, default=200, help="raters per prompt, k (default 200: all)")
    p.add_argument("--phases", default="10,50,200", help="concurrent raters per phase (default 10,50,200)")
    p.add_argument("--think", type=float, default=2.0,
                   help="mean seconds a rater reads before each save (exponential; default 2, a quick human; "
                        "0 = save as fast as the server answers, a saturation test)")
    p.add_argument("--no-uvloop", action="store_true",
                   help="serve with asyncio's own loop and h11, as without uvloop/httptools installed (a comparison)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase (default 20)")
    p.add_argument("--new-tokens", type=int, default=8, help="max_new_tokens of the generated answers")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def prompt_rows(n: int) -> str:
    cats = ["basicas", "complejas", "creativas"]
    return "\n".join(json.dumps({"id": f"q{i:04d}", "category": cats[i % 3],
                                 "text": f"Pregunta {i:04d}: explica {TOPICS[i % len(TOPICS)]} a un contribuyente."},
                                ensure_ascii=False) for i in range(n))


def build_app(tmp: Path, args):
    """(ctx, demo, Session, session id): tiny model, accounts, prompts, answers, one open session."""
    import yaml
    from sqlalchemy import select

    import app
    from esllm.store import db, users
    from esllm.store.models import ContestantSnapshot
    from esllm.study.answers import generate_answers
    from esllm.study.prompts import import_prompt_set, parse_prompts
    from esllm.study.sessions import create_session
    from tests import tiny as tm

    t0 = time.perf_counter()
    model = tm.build_family("llama", tmp / "model")
    for i, name in enumerate(("a1", "a2")):
        tm.build_adapter(model, tm.FAMILIES["llama"].target_modules, tmp / "adapters" / name, seed=i + 1)
    cfg = {"models": {"tiny": {"source": str(model), "quantization": "none", "device": "cpu", "template": "llama-2"}},
           "contestants": [{"name": CONTESTANTS[0], "model": "tiny", "preset": "greedy"},
                           {"name": CONTESTANTS[1], "model": "tiny", "adapter": "a1", "preset": "greedy"},
                           {"name": CONTESTANTS[2], "model": "tiny", "adapter": "a2", "preset": "greedy"}],
           "limits": {"max_new_tokens": args.new_tokens}, "adapters_dir": str(tmp / "adapters"),
           "auto_contestants": False}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    url = f"sqlite:///{tmp / 'rating.sqlite3'}"
    db.upgrade(url)
    Session = db.make_sessionmaker(db.make_engine(url))
    raters = [f"r{i:03d}" for i in range(args.raters)]
    with Session() as s:
        users.add_user(s, "admin", PW, "admin")
        for r in raters:
            users.add_user(s, r, PW, "rater")
        import_prompt_set(s, "carga", parse_prompts(prompt_rows(args.prompts), "jsonl"))
        s.commit()
    ctx, demo = app.create(str(tmp / "config.yaml"), progress=lambda m: None, db_url=url)
    assert not ctx.local_mode
    print(f"  tiny Llama + 2 adapters, {len(raters) + 1} accounts, app started: {time.perf_counter() - t0:.1f} s")
    t1 = time.perf_counter()
    rep = generate_answers(Session, ctx.engine, "carga", CONTESTANTS, attempts=1)
    assert not rep.errors, rep.errors[:3]
    print(f"  generate_answers: {rep.generated} answers ({args.prompts} prompts x 3 contestants, "
          f"<= {args.new_tokens} new tokens) in {time.perf_counter() - t1:.1f} s")
    t2 = time.perf_counter()
    with Session() as s:
        ids = [s.scalars(select(ContestantSnapshot.id).where(ContestantSnapshot.name == n)).one() for n in CONTESTANTS]
        sid = create_session(s, name="carga", prompt_set="carga", contestant_ids=ids, raters=raters,
                             k=args.overlap, rng=random.Random(args.seed)).id
        s.commit()
    print(f"  session: {args.prompts} prompts x k={args.overlap} = {args.prompts * args.overlap} assignments "
          f"(~{args.prompts * args.overlap // args.raters} per rater), created in {time.perf_counter() - t2:.1f} s")
    return ctx, demo, Session, sid


@dataclass
class Rater:
    """What one simulated rater did (pickled back from the client process)."""

    name: str
    saved: dict = field(default_factory=dict)  # prompt text -> [A, B, C], last successful save
    lat: list = field(default_factory=list)  # seconds per successful /evaluar_guardar
    opens: list = field(default_factory=list)  # seconds per /evaluar_abrir
    errors: list = field(default_factory=list)
    out_of_order: int = 0  # the item shown after a save was not the next position
    finished: bool = False


def item_of(out) -> tuple[int, str] | None:
    """(position, prompt text) of what the client was shown; None when the rater has no item left.
    API outputs (server-side state is not sent): progress, context, prompt, comment, answers A/B/C, radios…"""
    if not out[2]:
        return None
    return int(POSITION.search(out[0]).group(1)), out[2].split("\n\n", 1)[1]


class GradioQueue:
    """A lightweight client of one Gradio browser session, speaking the queue protocol the page speaks:
    POST /gradio_api/queue/join {data, fn_index, session_hash} -> event_id, then the server-sent events of
    GET /gradio_api/queue/data?session_hash=… until `process_completed` for that event. One httpx.AsyncClient
    (its login cookie) per rater; gr.State lives server-side under the session hash, as for a browser tab."""

    def __init__(self, http, fn_index: dict[str, int], timeout: float = 60.0):
        import secrets

        self.http, self.fn_index, self.timeout = http, fn_index, timeout
        self.session_hash = secrets.token_hex(6)

    async def call(self, api_name: str, data: list):
        import json as _json

        join = await self.http.post("gradio_api/queue/join", json={
            "data": data, "fn_index": self.fn_index[api_name], "session_hash": self.session_hash,
            "event_data": None, "trigger_id": None}, timeout=self.timeout)
        join.raise_for_status()
        event_id = join.json()["event_id"]
        async with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": self.session_hash},
                                    timeout=self.timeout) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                msg = _json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "process_completed":
                    out = msg.get("output") or {}
                    if not msg.get("success"):
                        raise RuntimeError(str(out.get("error") or out)[:200])
                    return out["data"]
                if msg.get("msg") == "close_stream":
                    break
        raise RuntimeError("the event stream ended without a result")


async def login(base: str, name: str, fn_index_holder: dict):
    """A logged-in httpx.AsyncClient for `name` (POST /login, as the login page does), and the API's fn ids."""
    import httpx

    http = httpx.AsyncClient(base_url=base, timeout=60.0,
                             limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
    for attempt in range(3):
        try:
            r = await http.post("login", data={"username": name, "password": PW})
            r.raise_for_status()
            break
        except Exception:
            if attempt == 2:
                raise
    if not fn_index_holder:
        cfg = (await http.get("config")).json()
        fn_index_holder.update({d["api_name"]: d["id"] for d in cfg["dependencies"] if d.get("api_name")})
    return http


async def save_one(q: GradioQueue, r: Rater, rng: random.Random, cur: tuple[int, str]):
    """Save the item `cur` with random scores («Guardar y seguir»); record the latency and the acknowledged values
    (the server said it succeeded); return the next item shown (None when the rater has finished)."""
    pos, prompt = cur
    vals = [str(rng.randint(1, 5)) for _ in range(3)]
    t = time.perf_counter()
    out = await q.call("evaluar_guardar", [None, "", *vals, *[None] * 12])
    r.lat.append(time.perf_counter() - t)
    r.saved[prompt] = vals
    nxt = item_of(out[1:])
    if nxt is not None and nxt[0] != pos + 1:
        r.out_of_order += 1
    return nxt


async def work(q: GradioQueue, r: Rater, rng: random.Random, sid: int, deadline: float, think: float) -> None:
    """Open the session, then save the item shown with random scores, again and again until `deadline`,
    waiting `think` seconds on average (exponential) before each save, as a person reading the answers would
    (0: as fast as the server answers). A failed call is counted in `errors`, then the session is reopened to
    learn where the server is."""
    import asyncio

    async def reopen():  # the item, None when done, False when the open failed
        t = time.perf_counter()
        try:
            out = await q.call("evaluar_abrir", [sid])
        except Exception as e:
            r.errors.append(f"{type(e).__name__} (open): {str(e)[:160]}")
            return False
        r.opens.append(time.perf_counter() - t)
        return item_of(out[1:])  # the API's first output is the server-side state: skip it

    cur = False
    while cur is False and time.perf_counter() < deadline:
        cur = await reopen()
    while cur and time.perf_counter() < deadline:
        if think > 0:
            await asyncio.sleep(min(rng.expovariate(1 / think), max(0.0, deadline - time.perf_counter())))
            if time.perf_counter() >= deadline:
                break
        try:
            cur = await save_one(q, r, rng, cur)
        except Exception as e:
            r.errors.append(f"{type(e).__name__}: {str(e)[:160]}")
            cur = False
            while cur is False and time.perf_counter() < deadline:
                cur = await reopen()
    r.finished = cur is None


LOGINS_AT_ONCE = 4  # each login is a scrypt on the server (~50 ms of CPU): do not flood it before the clock


def client_process(url: str, names: list[str], sid: int, seconds: float, phase: int, think: float, go,
                   results) -> None:
    """Child process (one asyncio loop for every rater of the phase: the clients cost little CPU and share
    no GIL with the server): log every rater in, a few at a time, wait for `go`, run them all. Puts the login
    time, then the results, on `results`; a failed login puts the error instead."""
    import asyncio

    async def run():
        t0 = time.perf_counter()
        fn_index: dict[str, int] = {}
        sem = asyncio.Semaphore(LOGINS_AT_ONCE)

        async def one(nm):
            async with sem:
                return nm, await login(url, nm, fn_index)

        clients = dict(await asyncio.gather(*(one(nm) for nm in names)))
        results.put(time.perf_counter() - t0)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        cpu0 = time.process_time()
        t_start = time.perf_counter()
        raters = {nm: Rater(nm) for nm in names}
        await asyncio.gather(*(work(GradioQueue(clients[nm], fn_index), raters[nm], random.Random(f"{nm}/{phase}"),
                                    sid, t_start + seconds, think) for nm in names))
        wall = time.perf_counter() - t_start
        for http in clients.values():
            await http.aclose()
        return raters, wall, time.process_time() - cpu0

    try:
        got = asyncio.run(run())
    except Exception as e:
        results.put(RuntimeError(f"client process failed: {type(e).__name__}: {e}"))
        return
    results.put(got)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def count_sql(sessionmaker) -> Counter:
    """A counter of the SQL statements the app's database engine runs from now on (key "sql")."""
    from sqlalchemy import event

    n: Counter = Counter()
    event.listen(sessionmaker.kw["bind"], "before_cursor_execute", lambda *a: n.update(("sql",)))
    return n


def from_child(results, child, timeout: float):
    """The next item the child process puts on `results`; RuntimeError if the child dies first."""
    import queue

    end = time.monotonic() + timeout
    while True:
        try:
            got = results.get(timeout=5)
        except queue.Empty:
            if child.exitcode is not None:
                raise RuntimeError(f"the client process ended (exit code {child.exitcode}) without results") from None
            if time.monotonic() > end:
                raise
            continue
        if isinstance(got, Exception):
            child.join()
            raise got
        return got


def run_phase(n: int, phase: int, raters: dict[str, Rater], url: str, sid: int, seconds: float, think: float,
              sql: Counter) -> None:
    import multiprocessing as mp

    names = [f"r{i:03d}" for i in range(n)]
    header(f"{n} raters at once for {seconds:.0f} s" + (f", {think:g} s of reading per item on average" if think
                                                        else ", saving as fast as the server answers"))
    spawn = mp.get_context("spawn")  # a clean child: no torch, no server, its own GIL
    go, results = spawn.Event(), spawn.Queue()
    child = spawn.Process(target=client_process, args=(url, names, sid, seconds, phase, think, go, results))
    child.start()
    logged = from_child(results, child, 900)
    print(f"  {n} clients logged in ({LOGINS_AT_ONCE} at a time, before the clock): {logged:.1f} s")
    busy0, server0 = _cpu_seconds()
    sql0 = sql["sql"]
    go.set()
    got, wall, client_cpu = from_child(results, child, seconds + 900)
    busy1, server1 = _cpu_seconds()
    child.join()
    for nm, r in got.items():
        old = raters.setdefault(nm, Rater(nm))
        old.saved.update(r.saved)
        old.finished = r.finished
    lat = [x for r in got.values() for x in r.lat]
    opens = [x for r in got.values() for x in r.opens]
    errs = [e for r in got.values() for e in r.errors]
    per_rater = [len(r.lat) for r in got.values()]
    server = server1 - server0
    print(f"  saves: {len(lat)} in {wall:.1f} s = {len(lat) / wall:.1f} saves/s "
          f"({len(lat) * 3 / wall:.0f} score rows/s); per rater min/median/max {min(per_rater)}/"
          f"{statistics.median(per_rater):.0f}/{max(per_rater)}; raters who finished all items: "
          f"{sum(r.finished for r in got.values())}")
    print(f"  /evaluar_guardar latency: p50 {pct(lat, .5) * 1e3:.0f} ms, p95 {pct(lat, .95) * 1e3:.0f} ms, "
          f"max {max(lat, default=float('nan')) * 1e3:.0f} ms")
    print(f"  /evaluar_abrir latency (first call of each rater): p50 {pct(opens, .5) * 1e3:.0f} ms, "
          f"max {max(opens, default=float('nan')) * 1e3:.0f} ms")
    print(f"  errors: {len(errs)}" + (f" (e.g. {Counter(errs).most_common(3)})" if errs else "")
          + f"; next item not the next position: {sum(r.out_of_order for r in got.values())}")
    print(f"  SQL statements: {sql['sql'] - sql0} ({(sql['sql'] - sql0) / max(1, len(lat)):.1f} per save, "
          f"the first open of each rater included)")
    print(f"  CPU: server process {server / wall:.2f} cores ({server / max(1, len(lat)) * 1e3:.0f} ms per save), "
          f"client process {client_cpu / wall:.2f} cores, anything else "
          f"{max(0.0, (busy1 - busy0) - server - client_cpu) / wall:.2f} cores (of {os.cpu_count()})")


def verify(Session, sid: int, raters: dict[str, Rater]) -> tuple[int, int]:
    """Compare every client's successful saves with the Score rows; prints and returns (lost, duplicated)."""
    from sqlalchemy import select

    from esllm.store.models import Answer, Assignment, Prompt, Score, User

    header("Clients' saves vs database rows")
    with Session() as s:
        user_id = {u.name: u.id for u in s.scalars(select(User))}
        prompt_id = {p.text: p.id for p in s.scalars(select(Prompt))}
        assignment = {(a.rater_id, a.prompt_id): a for a in
                      s.scalars(select(Assignment).where(Assignment.session_id == sid))}
        answer_id = {(a.prompt_id, a.contestant_id): a.id for a in s.scalars(select(Answer).where(Answer.selected))}
        rows = s.execute(select(Score.assignment_id, Score.answer_id, Score.criterion, Score.label, Score.value)
                         .join(Assignment, Score.assignment_id == Assignment.id)
                         .where(Assignment.session_id == sid)).all()
        finished = sum(1 for a in assignment.values() if a.finished_at is not None)
    stored = Counter((a, b, c) for a, b, c, _, _ in rows)
    value = {(a, b, c): (lb, v) for a, b, c, lb, v in rows}
    expected = {}
    for r in raters.values():
        for prompt, vals in r.saved.items():
            a = assignment[user_id[r.name], prompt_id[prompt]]
            for label, v in zip("ABC", vals):
                expected[(a.id, answer_id[a.prompt_id, a.permutation[label]], "general")] = (label, int(v))
    lost = sum(1 for k, lv in expected.items() if stored[k] == 0 or value[k] != lv)
    dup = sum(1 for n in stored.values() if n > 1)
    extra = sum(1 for k in stored if k not in expected)
    items = sum(len(r.saved) for r in raters.values())
    print(f"  items saved (clients): {items}; assignments finished (database): {finished}")
    print(f"  score rows expected: {len(expected)}; in the database: {len(rows)}")
    print(f"  lost (sent and answered OK, but missing or another value/label): {lost}")
    print(f"  duplicated ((assignment, answer, criterion) stored more than once): {dup}")
    print(f"  extra (stored, though the client saw the save fail or never sent it): {extra}")
    return lost, dup


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    no_progress_bars()
    if args.no_uvloop:  # uvicorn's "auto" loop and http fall back to asyncio and h11 when these cannot import
        sys.modules["uvloop"] = sys.modules["httptools"] = None
    import torch

    torch.set_num_threads(1)  # the tiny model gains nothing from more; 2 threads fight the server on 2 cores
    import gradio
    import gradio_client
    import sqlalchemy

    from esllm.ui import CSS, HEAD

    print(f"esllm rating benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    import importlib.util

    fast = all(importlib.util.find_spec(m) is not None for m in ("uvloop", "httptools")) and not args.no_uvloop
    print(f"server event loop and HTTP parser: {'uvloop + httptools' if fast else 'asyncio + h11'}")
    print(f"python {sys.version.split()[0]}, gradio {gradio.__version__}, gradio_client {gradio_client.__version__}, "
          f"sqlalchemy {sqlalchemy.__version__}; {os.cpu_count()} CPUs; args {vars(args)}")
    header("Setup")
    with tempfile.TemporaryDirectory(prefix="esllm-rating-") as d:
        ctx, demo, Session, sid = build_app(Path(d), args)
        import app

        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    show_error=True, css=CSS, head=HEAD, **app.launch_kwargs(ctx, "127.0.0.1"))
        url = f"http://127.0.0.1:{port}/"
        raters: dict[str, Rater] = {}
        sql = count_sql(ctx.sessionmaker)
        try:
            for phase, n in enumerate(int(x) for x in args.phases.split(",")):
                run_phase(n, phase, raters, url, sid, args.seconds, args.think, sql)
            lost, dup = verify(Session, sid, raters)
        finally:
            demo.close()
    ok = lost == 0 and dup == 0
    print(f"\nresult: {'OK' if ok else 'FAILED'} (lost {lost}, duplicated {dup})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
