"""Start the esllm web app.

    python app.py                         # http://127.0.0.1:7860, configs/default.yaml
    python app.py --port 8000 --config configs/estudio-7b.yaml
    python app.py --help

Loads every base model named in the config once (the first start converts the bundled GGUF,
~2 min on 2 cores, with progress on the terminal), discovers adapters, then serves the UI.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="esllm: banco de trabajo de LLM en español (interfaz web).")
    p.add_argument("--host", default=os.environ.get("ESLLM_HOST", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1; env ESLLM_HOST)")
    p.add_argument("--port", type=int, default=int(os.environ.get("ESLLM_PORT", "7860")),
                   help="port (default 7860; env ESLLM_PORT)")
    p.add_argument("--config", default=os.environ.get("ESLLM_CONFIG", str(ROOT / "configs" / "default.yaml")),
                   help="contestants YAML (default configs/default.yaml; env ESLLM_CONFIG)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p.parse_args(argv)


def create(config_path: str, progress=print):
    """Build (engine, demo) without launching; used by tests."""
    from esllm.config import load_config
    from esllm.engine import Engine
    from esllm.ui import build_app
    from esllm.ui.context import AppContext

    config = load_config(config_path)
    engine = Engine(config, root=ROOT, progress=progress)
    engine.start()
    ctx = AppContext(config=config, engine=engine)
    return ctx, build_app(ctx)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from esllm import EsllmError
    from esllm.ui import CSS

    try:
        ctx, demo = create(args.config)
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"esllm listo: abra http://{args.host}:{args.port} en el navegador", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, css=CSS, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
