"""Command line: `python -m esllm COMMAND`.

    python -m esllm check-config configs/default.yaml   # validate a contestants file
    python -m esllm adapters [--config C]               # list adapter folders and why any is unusable
                                                        # (static checks; shape checks need the app)
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
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
