"""Batch throughput through esllm's OpenAI-compatible backend: 3 served models (adapters) x N requests, sent
`concurrency` at a time (what batch jobs do) vs one at a time, on the same server.

    # vLLM on a GPU (issue 13's measurement: 3 adapters x 32 concurrent requests vs one at a time)
    ESLLM_KEY=... python bench/bench_openai.py --url http://127.0.0.1:8000/v1 --key-env ESLLM_KEY \
        --models base tributario instrucciones --requests 32 --concurrency 32
    # llama-cpp-python's server on this CPU (scripts/serve_llamacpp.py): it answers one request at a time
    python bench/bench_openai.py --url http://127.0.0.1:8080/v1 --key-env ESLLM_SERVER_KEY \
        --models gemma-base gemma-instrucciones-es gemma-tributario-ec --requests 8 --concurrency 8

Prints generated tokens/s both ways and their ratio (completion tokens as the server reports them, else
streamed pieces). Greedy, `--max-new-tokens` each, prompts from the bundled tributario-ec set.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key-env", default=None)
    ap.add_argument("--models", nargs="+", required=True, help="served model names (one contestant each)")
    ap.add_argument("--requests", type=int, default=32, help="requests per model")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--api", choices=["chat", "completions"], default="completions")
    ap.add_argument("--template", default="alpaca-es")
    args = ap.parse_args()

    from esllm.engine.config import parse_config
    from esllm.engine.core import Engine

    prompts = [json.loads(x)["text"] for x in (ROOT / "data/prompts/tributario-ec.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]

    def engine(conc: int) -> Engine:
        cfg = {"models": {"srv": {"source": f"openai:{args.url}", "api": args.api, "template": args.template,
                                  "concurrency": conc, "timeout_s": 600,
                                  **({"api_key_env": args.key_env} if args.key_env else {})}},
               "contestants": [{"name": f"c{i}", "model": "srv", "served_model": m, "preset": "greedy"}
                               for i, m in enumerate(args.models)],
               "limits": {"max_new_tokens": args.max_new_tokens}}
        e = Engine(parse_config(cfg), root=ROOT)
        e.start()
        missing = [n for n, c in e.registry.contestants.items() if not c.available]
        if missing:
            sys.exit(f"unavailable: {[e.registry.contestants[n].reason for n in missing]}")
        return e

    convs = [[{"role": "user", "content": prompts[i % len(prompts)]}] for i in range(args.requests)]

    def run(e: Engine, together: bool) -> tuple[float, int]:
        import threading
        t0 = time.perf_counter()
        out: dict[str, list] = {}
        threads = [threading.Thread(target=lambda n=n: out.__setitem__(n, e.generate_many(n, convs)))
                   for n in e.registry.contestants]
        for t in threads:  # together: the models' requests all in flight at once (mixed-adapter batching)
            t.start()
            if not together:
                t.join()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        results = [r for rs in out.values() for r in rs]
        bad = [r for r in results if not r.complete]
        if bad:
            sys.exit(f"{len(bad)} failed: {bad[0].error}")
        return wall, sum(r.new_tokens for r in results)

    print(f"# bench_openai · {time.strftime('%Y-%m-%d %H:%M')} · {platform.node()} · {args.url} · api={args.api}")
    print(f"# {len(args.models)} models x {args.requests} requests, greedy, max_new_tokens={args.max_new_tokens}")
    seq_e, conc_e = engine(1), engine(args.concurrency)
    run(conc_e, True)  # warm-up (the server loads what it needs)
    w1, n1 = run(seq_e, False)
    wc, nc = run(conc_e, True)
    print(f"one request at a time             : {n1} tokens in {w1:.1f} s = {n1 / w1:.1f} tok/s")
    print(f"{args.concurrency:>3} per model x {len(args.models)} models at once: {nc} tokens in {wc:.1f} s = {nc / wc:.1f} tok/s")
    print(f"ratio concurrent / one at a time: {(nc / wc) / (n1 / w1):.2f}x")


if __name__ == "__main__":
    main()
