"""The llama.cpp backend against what a user would otherwise run, in one process and one run (CPU):

    PYTHONPATH=. python bench/bench_llamacpp.py                      # ~40 min on 2 cores (the old batch path is most of it)
    PYTHONPATH=. python bench/bench_llamacpp.py --batch-prompts 10   # the batch job on the set's first 10 prompts only
    PYTHONPATH=. python bench/bench_llamacpp.py --skip-start --skip-batch
    PYTHONPATH=. python bench/bench_llamacpp.py --skip-start --llamacpp-only --rounds 7   # the ratios, ~3 min

1. Decode, interleaved rounds, the same prompt and the same GGUF (the bundled gemma-3-270m Q4_K_M):
   plain llama-cpp-python (`Llama.generate`, greedy, the same prompt tokens and the same number of threads);
   esllm's llama.cpp backend through the Engine with no adapter and each shipped adapter, greedy and
   contrastive (the contestants' own preset: penalty_alpha 0.6, top_k 4); esllm's transformers backend
   (nf4 and no quantisation) with the tributario-ec adapter, greedy, and nf4 contrastive. Tokens/s is the
   decode rate after the first token, (new tokens - 1) / (latency - time to first token): every runner stops
   at EOS or 128 tokens, as the chat does.
2. Adapter switch: `llama_set_adapters_lora` + emptying the KV cache, timed inside the backend, over 300
   one-token requests alternating between the three contestants; then two threads on two adapters at once
   (16 requests each) compared with the answers each gets alone: crossovers.
3. Start to serving: `python app.py` until `GET /` answers 200, with an empty cache (cold: the GGUF is
   copied out of its package, each adapter converted to a GGUF LoRA) and again (warm); the old path's warm
   start (`backend: transformers`, nf4, its safetensors conversion cached) for comparison.
4. The batch job: the bundled `tributario-ec` set x 3 contestants x 1 attempt, 128 new tokens, through
   `esllm.study.answers.generate_answers` into a fresh SQLite store: the old path (transformers nf4, one
   answer at a time) vs the new (llama.cpp, batches of the backend's `max_batch`).

Numbers move with whatever else runs on the machine: each section prints the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/bench_llamacpp.py` works too

from bench.common import PROMPT, header, no_progress_bars, quiet, rss_mib  # noqa: E402

CONTESTANTS = ["gemma-base", "gemma-instrucciones", "gemma-tributario"]
MSGS = [{"role": "user", "content": PROMPT}]


def engine_on(backend: str, quantization: str = "nf4"):
    from esllm.engine.config import load_config
    from esllm.engine.core import Engine
    from esllm.paths import DEFAULT_CONFIG, ROOT

    cfg = load_config(DEFAULT_CONFIG)
    spec = cfg.models["gemma-3-270m"].model_copy(update={"backend": backend, "quantization": quantization,
                                                         "device": "cpu"})
    eng = Engine(cfg.model_copy(update={"models": {"gemma-3-270m": spec}}), Path(ROOT), progress=quiet)
    eng.start()
    missing = set(CONTESTANTS) - set(eng.available())
    if missing:
        raise SystemExit(f"not available on {backend}: {sorted(missing)} ({eng.registry.adapter_errors}, {eng.registry.base_errors})")
    return eng


def decode_rate(new_tokens: int, latency: float, first: float) -> float:
    return (new_tokens - 1) / (latency - first) if new_tokens > 1 and latency > first else float("nan")


class Plain:
    """llama-cpp-python's high-level Llama on the same file, greedy, the same prompt ids and threads."""

    def __init__(self, gguf: Path, ids: list[int], eos: list[int], threads: int, n: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=4096, n_batch=512, n_threads=threads,
                         n_threads_batch=threads, verbose=False)
        self.ids, self.eos, self.n = ids, set(eos), n

    def run(self) -> tuple[int, float, float]:
        t0 = time.perf_counter()
        first, count = None, 0
        for tok in self.llm.generate(self.ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                                     reset=True):
            if first is None:
                first = time.perf_counter() - t0
            if tok in self.eos:
                count += 1
                break
            count += 1
            if count >= self.n:
                break
        return count, time.perf_counter() - t0, first or 0.0


def section_decode(args, lc, tf_nf4, tf_none) -> None:
    from esllm.engine.messages import eos_token_ids, prompt_ids
    from esllm.engine.templates import get_template

    header(f"1. Decode tokens/s: same prompt, same GGUF, {args.rounds} interleaved rounds, "
           f"≤{args.new_tokens} new tokens, stop at EOS")
    base = lc.registry.bases["gemma-3-270m"]
    template = get_template(base.spec.template)
    ids, _ = prompt_ids(base.tok, template, MSGS, 2048)
    plain = Plain(Path(base.path), ids, eos_token_ids(base.tok, template), base.n_threads, args.new_tokens)
    print(f"prompt: {len(ids)} tokens; threads: {base.n_threads} (plain and esllm alike)")
    n = {"max_new_tokens": args.new_tokens}
    runners = {"plain llama.cpp (Llama.generate) greedy": plain.run}

    def via(eng, name, preset):
        def run():
            r = eng.generate(name, MSGS, preset=preset, overrides=n)
            return r.new_tokens, r.latency_s, r.first_token_s or 0.0
        return run

    for name in CONTESTANTS:
        runners[f"esllm llama.cpp {name} greedy"] = via(lc, name, "greedy")
    for name in CONTESTANTS:
        runners[f"esllm llama.cpp {name} contrastive"] = via(lc, name, None)  # the contestant's own preset
    if tf_nf4 is not None:
        runners["esllm transformers nf4 gemma-tributario greedy"] = via(tf_nf4, "gemma-tributario", "greedy")
        runners["esllm transformers none gemma-tributario greedy"] = via(tf_none, "gemma-tributario", "greedy")
        runners["esllm transformers nf4 gemma-tributario contrastive"] = via(tf_nf4, "gemma-tributario", None)
    for r in runners.values():  # warm-up: first-call costs (page faults, allocations) out of the timings
        r()
    rates: dict[str, list[float]] = {k: [] for k in runners}
    toks: dict[str, list[int]] = {k: [] for k in runners}
    for rnd in range(args.rounds):
        for label, r in runners.items():
            count, lat, first = r()
            rates[label].append(decode_rate(count, lat, first))
            toks[label].append(count)
        print(f"  round {rnd + 1}/{args.rounds} done (load {os.getloadavg()[0]:.2f})", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    w = max(map(len, runners))
    print(f"\n  {'runner':<{w}}  tok/s (median; each round)          new tokens")
    for k in runners:
        each = ", ".join(f"{x:.1f}" for x in rates[k])
        print(f"  {k:<{w}}  {med[k]:6.1f}  ({each})  {toks[k]}")
    p = med["plain llama.cpp (Llama.generate) greedy"]
    print("\n  ratios (targets: adapter ≥ 0.9x plain llama.cpp; contrastive ≥ 0.5x greedy, same backend)")
    for name in CONTESTANTS:
        g, c = med[f"esllm llama.cpp {name} greedy"], med[f"esllm llama.cpp {name} contrastive"]
        print(f"    {name}: greedy / plain = {g / p:.2f}x   contrastive / greedy = {c / g:.2f}x")
    if tf_nf4 is None:
        return
    old = med["esllm transformers nf4 gemma-tributario greedy"]
    print(f"    gemma-tributario greedy: llama.cpp / transformers nf4 = "
          f"{med['esllm llama.cpp gemma-tributario greedy'] / old:.2f}x; llama.cpp / transformers none = "
          f"{med['esllm llama.cpp gemma-tributario greedy'] / med['esllm transformers none gemma-tributario greedy']:.2f}x")
    print(f"    gemma-tributario contrastive: llama.cpp / transformers nf4 = "
          f"{med['esllm llama.cpp gemma-tributario contrastive'] / med['esllm transformers nf4 gemma-tributario contrastive']:.2f}x")
    del plain


def section_switch(args, lc) -> None:
    header("2. Adapter switch and concurrency (llama.cpp backend)")
    base = lc.registry.bases["gemma-3-270m"]
    base.switch_seconds.clear()
    short = [{"role": "user", "content": "Hola"}]
    for i in range(args.switches):
        lc.generate(CONTESTANTS[i % 3], short, preset="greedy", overrides={"max_new_tokens": 1})
    xs = sorted(base.switch_seconds)
    q = lambda p: xs[int(p * (len(xs) - 1))]  # noqa: E731
    print(f"  switch (llama_set_adapters_lora + KV cache cleared): n={len(xs)}, median {q(0.5) * 1e3:.3f} ms, "
          f"p95 {q(0.95) * 1e3:.3f} ms, max {xs[-1] * 1e3:.3f} ms  (target ≤ 5 ms)")
    msgs = [[{"role": "user", "content": f"Escribe una frase sobre {x}."}] for x in ("Quito", "el IVA", "el mar", "el RUC")]
    pair = ("gemma-instrucciones", "gemma-tributario")
    alone = {(n, i): lc.generate(n, m, preset="greedy", overrides={"max_new_tokens": 24}).text
             for n in pair for i, m in enumerate(msgs)}
    bad: list[str] = []

    def user(name: str) -> None:
        for k in range(16):
            i = k % len(msgs)
            t = lc.generate(name, msgs[i], preset="greedy", overrides={"max_new_tokens": 24}).text
            if t != alone[(name, i)]:
                bad.append(f"{name} #{k}")

    threads = [threading.Thread(target=user, args=(n,)) for n in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"  two users on two adapters at once, 16 requests each: crossovers {len(bad)} of 32 {bad or ''}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_serving(env: dict, config: Path | None = None, timeout: float = 600) -> float:
    port = free_port()
    cmd = [sys.executable, "app.py", "--port", str(port), "--log-level", "WARNING"]
    if config is not None:
        cmd += ["--config", str(config)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"app.py exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.1)
        raise SystemExit("app.py did not serve in time")
    finally:
        proc.terminate()
        proc.wait(30)


def section_start(args) -> None:
    from esllm.paths import DEFAULT_CONFIG, ROOT

    header("3. Start to serving (python app.py until GET / answers 200)")
    with tempfile.TemporaryDirectory(prefix="esllm-start-") as tmp:
        env = {**os.environ, "ESLLM_CACHE": str(Path(tmp) / "cache"), "GRADIO_ANALYTICS_ENABLED": "False"}
        env["ESLLM_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'start.sqlite3'}"
        cold = time_to_serving(env)
        warm = [time_to_serving(env) for _ in range(2)]
        print(f"  llama.cpp (default config), empty cache (cold): {cold:.1f} s")
        print(f"  llama.cpp (default config), warm: {', '.join(f'{w:.1f}' for w in warm)} s  (target ≤ 10 s)")
        old_cfg = Path(tmp) / "transformers.yaml"
        text = Path(DEFAULT_CONFIG).read_text(encoding="utf-8")
        assert "backend: auto" in text
        text = text.replace("backend: auto", "backend: transformers").replace("adapters_dir: adapters",
                                                                              f"adapters_dir: {Path(ROOT) / 'adapters'}")
        old_cfg.write_text(text, encoding="utf-8")
        env_old = {**env, "ESLLM_CACHE": os.environ.get("ESLLM_CACHE", str(Path.home() / ".cache" / "esllm"))}
        time_to_serving(env_old, old_cfg)  # converts the GGUF to safetensors if this cache lacks it
        old = time_to_serving(env_old, old_cfg)
        print(f"  old path (backend: transformers, nf4), warm: {old:.1f} s")


def section_batch(args, lc, tf_nf4) -> None:
    from esllm.store import db
    from esllm.study.answers import generate_answers
    from esllm.study.prompts import bundled_sets, import_prompt_set, parse_prompt_file

    rows = parse_prompt_file(bundled_sets()["tributario-ec"])
    if args.batch_prompts:
        rows = rows[:args.batch_prompts]
    header(f"4. Batch job: tributario-ec ({len(rows)} prompts) x {len(CONTESTANTS)} contestants x 1 attempt, "
           f"{args.new_tokens} new tokens, each contestant's preset (contrastive)")
    times = {}
    for label, eng in (("new: llama.cpp, batched", lc), ("old: transformers nf4, one at a time", tf_nf4)):
        with tempfile.TemporaryDirectory(prefix="esllm-batch-") as tmp:
            Session = db.open_store(f"sqlite:///{Path(tmp) / 'b.sqlite3'}")
            with Session() as s:
                import_prompt_set(s, "tributario-ec", rows)
                s.commit()
            t0 = time.perf_counter()
            rep = generate_answers(Session, eng, "tributario-ec", CONTESTANTS, attempts=1,
                                   max_new_tokens=args.new_tokens)
            times[label] = time.perf_counter() - t0
            from sqlalchemy import func, select

            from esllm.store.models import Answer

            with Session() as s:
                n = s.scalar(select(func.count()).select_from(Answer))
                toks = s.scalar(select(func.sum(Answer.new_tokens)))
            Session.kw["bind"].dispose()
        print(f"  {label}: {times[label]:.1f} s, {rep.generated} answers stored ({n} rows, {toks} new tokens, "
              f"{toks / times[label]:.1f} tok/s overall), errors {len(rep.errors)}  (load {os.getloadavg()[0]:.2f})",
              flush=True)
    old, new = times["old: transformers nf4, one at a time"], times["new: llama.cpp, batched"]
    print(f"  old / new wall time = {old / new:.2f}x  (target ≥ 4x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--switches", type=int, default=300)
    ap.add_argument("--batch-prompts", type=int, default=0, help="only the set's first N prompts (0 = all 30)")
    ap.add_argument("--skip-start", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--llamacpp-only", action="store_true",
                    help="decode and switch sections on llama.cpp only (plain vs esllm): more rounds in little time")
    args = ap.parse_args()
    no_progress_bars()
    import llama_cpp

    print(f"esllm llama.cpp benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, llama-cpp-python {llama_cpp.__version__}")
    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    if not args.skip_start:
        section_start(args)
    t0 = time.perf_counter()
    lc = engine_on("llama.cpp")
    print(f"\nengines: llama.cpp ready in {time.perf_counter() - t0:.1f} s", end="")
    if args.llamacpp_only:
        print()
        section_decode(args, lc, None, None)
        section_switch(args, lc)
        return
    t0 = time.perf_counter()
    tf_nf4 = engine_on("transformers", "nf4")
    print(f"; transformers nf4 in {time.perf_counter() - t0:.1f} s", end="")
    t0 = time.perf_counter()
    tf_none = engine_on("transformers", "none")
    print(f"; transformers none in {time.perf_counter() - t0:.1f} s; process RSS {rss_mib():.0f} MiB")
    section_decode(args, lc, tf_nf4, tf_none)
    section_switch(args, lc)
    del tf_none
    if not args.skip_batch:
        section_batch(args, lc, tf_nf4)


if __name__ == "__main__":
    main()
