"""`check-config` (validate a contestants YAML file) and `adapters` (list adapter folders and their problems)."""

from __future__ import annotations

from esllm.paths import ROOT


def register(sub) -> None:
    c = sub.add_parser("check-config", help="validate a contestants YAML file")
    c.add_argument("config", nargs="?", default=None)
    c.set_defaults(func=cmd_check_config)
    a = sub.add_parser("adapters", help="list adapter folders and their problems")
    a.add_argument("--config", default=None)
    a.set_defaults(func=cmd_adapters)


def cmd_check_config(args) -> int:
    from esllm.engine.config import load_config

    cfg = load_config(args.config)
    print(f"OK: {len(cfg.models)} modelo(s), {len(cfg.contestants)} concursante(s)")
    for ct in cfg.contestants:
        print(f"  - {ct.name}: {ct.model}" + (f" + {ct.adapter}" if ct.adapter else "") + f" [{ct.preset}]")
    return 0


def cmd_adapters(args) -> int:
    from esllm.engine.adapters import scan_dir
    from esllm.engine.config import load_config

    cfg = load_config(args.config)
    folder = cfg.resolve_adapters_dir(ROOT)
    infos = scan_dir(folder)
    if not infos:
        print(f"No hay carpetas de adaptador en {folder}")
    for info in infos:
        state = "ok" if info.ok else f"ERROR: {info.reason}"
        print(f"{info.name}: {state}" + (f" (r={info.r}, base={info.base_hint})" if info.ok else ""))
    return 0 if all(i.ok for i in infos) else 1
