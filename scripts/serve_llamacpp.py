"""Serve the bundled gemma-3-270m and its adapters with llama-cpp-python's OpenAI-compatible server, for
esllm's `openai:` backend (README «Escalar», configs/servidores/gemma-llamacpp.yaml).

    .venv/bin/python scripts/serve_llamacpp.py                      # 127.0.0.1:8080, key from $ESLLM_SERVER_KEY
    .venv/bin/python scripts/serve_llamacpp.py --host 0.0.0.0 --port 8080 --threads 8

Each adapter folder under adapters/ is converted once to a GGUF LoRA (esllm's converter, cached in
~/.cache/esllm) and served as its own model alias: gemma-base, gemma-<adapter folder>. llama-cpp-python's
server keeps one of them loaded and swaps when a request names another alias (~0.1 s for this model), and
answers one request at a time; vLLM or llama.cpp's llama-server batch requests (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--ctx", type=int, default=4096, help="context length (tokens)")
    ap.add_argument("--adapters", default=str(ROOT / "adapters"))
    ap.add_argument("--key-env", default="ESLLM_SERVER_KEY",
                    help="environment variable holding the API key clients must send (unset: no key)")
    args = ap.parse_args()

    import llama_cpp

    from esllm.engine.adapters import scan_dir
    from esllm.engine.bundled import gguf_path
    from esllm.engine.gguf_lora import convert_adapter

    gguf = gguf_path("gemma-3-270m")
    meta = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False).metadata
    common = {"model": str(gguf), "n_ctx": args.ctx, "n_threads": args.threads, "verbose": False}
    models = [{**common, "model_alias": "gemma-base"}]
    for info in scan_dir(Path(args.adapters)):
        if not info.ok:
            print(f"{info.name}: no se sirve ({info.reason})", file=sys.stderr)
            continue
        lora = convert_adapter(info, gguf, meta)
        models.append({**common, "model_alias": f"gemma-{info.name}", "lora_path": str(lora)})
    cfg = {"host": args.host, "port": args.port, "interrupt_requests": False, "models": models}
    key = os.environ.get(args.key_env)
    if key:
        cfg["api_key"] = key
    fd, path = tempfile.mkstemp(prefix="esllm-llamacpp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    os.chmod(path, 0o600)  # it holds the key
    print(f"Sirviendo {', '.join(m['model_alias'] for m in models)} en http://{args.host}:{args.port}/v1"
          f" ({'con' if key else 'sin'} clave)", file=sys.stderr)
    os.execv(sys.executable, [sys.executable, "-m", "llama_cpp.server", "--config_file", path])


if __name__ == "__main__":
    main()
