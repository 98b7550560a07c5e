"""Soak test of the rating store (not CI): simulated raters save for a long time while an admin downloads
exports and the server is killed with -9 and restarted; at the end every acknowledged save must be in the
database with its value, none twice, and SQLite's integrity_check must say ok.

Run from the repository root (CPU; a tiny random Llama is built in-process, nothing is downloaded):

    .venv/bin/python bench/soak_rating.py                          # 30 min, 50 raters, 2 kills
    .venv/bin/python bench/soak_rating.py --minutes 2 --raters 10  # a quick try
    .venv/bin/python bench/soak_rating.py | tee bench/results/soak_cpu.txt

What it does: the setup of bench/bench_rating.py (tiny Llama + two random adapters as three contestants,
accounts admin + r000…, a generated prompt set, its answers, one open session where every rater has every
prompt), then the app runs as its own process exactly as a user starts it (`python app.py --config … --port …`
with ESLLM_DATABASE_URL), so it can be killed with SIGKILL. --raters simulated raters (one asyncio loop in a
child process, the Gradio queue protocol of bench_rating.GradioQueue) each log in, open the session and save
their items with random scores, --think seconds of reading per item on average. A save is *acknowledged* when
the server's answer says it succeeded. An admin client logs in too and every --export-every seconds asks
«Preparar descargas» (/resultados_descargar) and downloads puntuaciones.csv through its link. At --kills
evenly spaced moments the server gets SIGKILL (whatever it was doing: saves in flight, an export being
written) and is started again at once; clients see errors while it is down, log in again (a restart forgets
the login tokens), reopen the session and go on. At the end: every rater's last acknowledged save of each item
is compared with the score rows (lost = acknowledged but missing or another value), rows stored more than
once (duplicated), rows with no acknowledgement (extra: the server committed, then died before answering: not
an error), PRAGMA integrity_check, and the counts of errors and downtime.

What it does not know: one machine (2 cores) runs the server and the clients; SQLite only (WAL with SQLite's
default synchronous=FULL, so each commit is on disk; a killed process is tested here, not a power cut).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/soak_rating.py` works too

from bench.bench_rating import (  # noqa: E402
    GradioQueue,
    Rater,
    build_app,
    free_port,
    item_of,
    login,
    pct,
    save_one,
    verify,
)
from bench.common import header, no_progress_bars  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    p.add_argument("--raters", type=int, default=50, help="simulated raters (default 50)")
    p.add_argument("--prompts", type=int, default=400, help="prompts in the set (default 400: nobody runs out)")
    p.add_argument("--think", type=float, default=2.0, help="mean seconds of reading per item (default 2)")
    p.add_argument("--kills", type=int, default=2, help="SIGKILLs of the server, evenly spaced (default 2)")
    p.add_argument("--export-every", type=float, default=30.0, help="seconds between admin exports (default 30)")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


class Server:
    """`python app.py` as its own process group, killable with SIGKILL and restartable on the same port."""

    def __init__(self, config: Path, db_url: str, port: int, log: Path):
        self.config, self.db_url, self.port, self.log = config, db_url, port, log
        self.proc: subprocess.Popen | None = None
        self.starts: list[float] = []

    def start(self, timeout: float = 300.0) -> float:
        import httpx

        env = dict(os.environ, ESLLM_DATABASE_URL=self.db_url, GRADIO_ANALYTICS_ENABLED="False")
        t0 = time.perf_counter()
        with open(self.log, "a", encoding="utf-8") as out:
            self.proc = subprocess.Popen([sys.executable, "app.py", "--config", str(self.config), "--port",
                                          str(self.port), "--log-level", "WARNING"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/", timeout=2).status_code in (200, 401):
                    took = time.perf_counter() - t0
                    self.starts.append(took)
                    return took
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s; see {self.log}")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()


async def rater_loop(url: str, r: Rater, rng: random.Random, sid: int, deadline: float, think: float,
                     fn_index: dict) -> None:
    """Log in, open, save with think time until `deadline`; on any failure log in again and reopen (the server
    may be down or restarted). `r.saved` keeps the last acknowledged value of each item."""
    http, cur = None, False
    while time.perf_counter() < deadline:
        try:
            if http is None:
                http = await login(url, r.name, fn_index)
                q = GradioQueue(http, fn_index, timeout=30.0)
            if cur is False:
                t = time.perf_counter()
                out = await q.call("evaluar_abrir", [sid])
                r.opens.append(time.perf_counter() - t)
                cur = item_of(out[1:])
                if cur is None:
                    r.finished = True
                    return
            await asyncio.sleep(min(rng.expovariate(1 / think), max(0.0, deadline - time.perf_counter())))
            if time.perf_counter() >= deadline:
                break
            cur = await save_one(q, r, rng, cur)
            if cur is None:
                r.finished = True
                return
        except Exception as e:
            r.errors.append(type(e).__name__)
            cur = False
            if http is not None:
                await http.aclose()
            http = None
            await asyncio.sleep(0.5 + rng.random())  # the server may be restarting
    if http is not None:
        await http.aclose()


async def admin_loop(url: str, session: str, deadline: float, every: float, stats: Counter) -> None:
    """Every `every` seconds: «Preparar descargas», then download puntuaciones.csv through its link."""
    import httpx

    fn_index: dict = {}
    http = None
    while time.perf_counter() < deadline:
        await asyncio.sleep(min(every, max(0.0, deadline - time.perf_counter())))
        if time.perf_counter() >= deadline:
            break
        try:
            if http is None:
                http = await login(url, "admin", fn_index)
            out = await GradioQueue(http, fn_index, timeout=60.0).call("resultados_descargar", ["Sesión", session])
            files = out[0] or []
            csv = next(f for f in files if str(f.get("path", "")).endswith("puntuaciones.csv"))
            got = await http.get(f"gradio_api/file={csv['path']}")
            stats["exports ok" if got.status_code == 200 and got.content.count(b"\n") > 1 else "exports bad"] += 1
        except (httpx.HTTPError, RuntimeError, StopIteration, KeyError, TypeError) as e:
            stats[f"export error {type(e).__name__}"] += 1
            if http is not None:
                await http.aclose()
            http = None
    if http is not None:
        await http.aclose()


def client_process(url: str, names: list[str], sid: int, session: str, seconds: float, think: float,
                   export_every: float, seed: int, results) -> None:
    async def run():
        deadline = time.perf_counter() + seconds
        fn_index: dict = {}
        raters = {nm: Rater(nm) for nm in names}
        stats: Counter = Counter()
        await asyncio.gather(admin_loop(url, session, deadline, export_every, stats),
                             *(rater_loop(url, raters[nm], random.Random(f"{nm}/{seed}"), sid, deadline, think,
                                          fn_index) for nm in names))
        return raters, stats

    try:
        results.put(asyncio.run(run()))
    except Exception as e:  # reported to the parent, never lost in the child
        results.put(RuntimeError(f"client process failed: {type(e).__name__}: {e}"))


def main(argv=None) -> int:
    import multiprocessing as mp

    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    no_progress_bars()
    print(f"esllm soak test, {time.strftime('%Y-%m-%d %H:%M:%S')}; {os.cpu_count()} CPUs; args {vars(args)}")
    header("Setup")
    bargs = argparse.Namespace(prompts=args.prompts, raters=args.raters, overlap=args.raters,
                               new_tokens=args.new_tokens, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="esllm-soak-") as d:
        tmp = Path(d)
        ctx, demo, Session, sid = build_app(tmp, bargs)  # the database and files; this process serves nothing
        ctx.engine = None
        db_url = f"sqlite:///{tmp / 'rating.sqlite3'}"
        port = free_port()
        server = Server(tmp / "config.yaml", db_url, port, tmp / "server.log")
        print(f"  server (python app.py) ready in {server.start():.1f} s")
        url = f"http://127.0.0.1:{port}/"
        names = [f"r{i:03d}" for i in range(args.raters)]
        seconds = args.minutes * 60
        header(f"{args.raters} raters for {args.minutes:g} min, {args.kills} SIGKILL(s), an export every "
               f"{args.export_every:g} s")
        results = mp.get_context("spawn").Queue()
        child = mp.get_context("spawn").Process(target=client_process, args=(
            url, names, sid, "carga", seconds, args.think, args.export_every, args.seed, results))
        t0 = time.perf_counter()
        child.start()
        down = 0.0
        try:
            for k in range(1, args.kills + 1):
                kill_at = t0 + seconds * k / (args.kills + 1)
                time.sleep(max(0.0, kill_at - time.perf_counter()))
                server.kill9()
                t_kill = time.perf_counter()
                took = server.start()
                down += time.perf_counter() - t_kill
                print(f"  {time.perf_counter() - t0:7.1f} s: SIGKILL, restarted in {took:.1f} s")
            got = results.get(timeout=seconds + 900)
            child.join()
        finally:
            server.stop()
        if isinstance(got, Exception):
            raise got
        raters, stats = got
        lat = [x for r in raters.values() for x in r.lat]
        errs = Counter(e for r in raters.values() for e in r.errors)
        wall = time.perf_counter() - t0
        print(f"  acknowledged saves: {len(lat)} in {wall:.0f} s ({len(lat) / wall:.1f} saves/s); server down "
              f"{down:.1f} s in all")
        print(f"  save latency: p50 {pct(lat, .5) * 1e3:.0f} ms, p95 {pct(lat, .95) * 1e3:.0f} ms, "
              f"p99 {pct(lat, .99) * 1e3:.0f} ms, max {max(lat, default=float('nan')) * 1e3:.0f} ms")
        print(f"  client errors (while the server was down or restarting): {sum(errs.values())} {dict(errs)}")
        print(f"  admin exports: {dict(stats)}")
        print(f"  next item not the next position: {sum(r.out_of_order for r in raters.values())}")
        lost, dup = verify(Session, sid, raters)
        with sqlite3.connect(tmp / "rating.sqlite3") as con:
            integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        print(f"  PRAGMA integrity_check: {integrity}")
    ok = lost == 0 and dup == 0 and integrity == "ok" and stats.get("exports ok", 0) > 0
    print(f"\nresult: {'OK' if ok else 'FAILED'} (lost {lost}, duplicated {dup}, integrity {integrity})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
