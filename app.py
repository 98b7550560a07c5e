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

from esllm.paths import DEFAULT_CONFIG, ROOT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="esllm: banco de trabajo de LLM en español (interfaz web).")
    p.add_argument("--host", default=os.environ.get("ESLLM_HOST", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1; env ESLLM_HOST)")
    p.add_argument("--port", type=int, default=int(os.environ.get("ESLLM_PORT", "7860")),
                   help="port (default 7860; env ESLLM_PORT)")
    p.add_argument("--config", default=os.environ.get("ESLLM_CONFIG", str(DEFAULT_CONFIG)),
                   help="contestants YAML (default configs/default.yaml; env ESLLM_CONFIG)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p.parse_args(argv)


# Gradio's cap on every upload (launch(max_file_size=…); bigger ones get 413 before reaching a handler). The
# only upload is a prompt file for «Administrar» › «Importar prompts», itself capped at 2 MB
# (esllm.study.prompts.MAX_FILE_BYTES): 5 MB leaves room for files a little over that cap to get the Spanish
# message that names it, while no one can fill the disk or memory with one request.
MAX_UPLOAD = "5mb"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
AUTH_MESSAGE = ("Inicie sesión con su cuenta de esllm. Tras varios intentos fallidos seguidos hay que esperar antes "
                "de volver a intentarlo (de unos segundos a unos minutos); la página dice cuánto.")


def create(config_path: str, progress=print, db_url: str | None = None):
    """Build (context, demo) without launching; used by tests.

    Upgrades the rating store's schema first. No accounts -> single-user local mode (admin).
    """
    from esllm.engine.config import load_config
    from esllm.engine.core import Engine
    from esllm.store import db, users
    from esllm.ui import build_app
    from esllm.ui.context import AppContext

    config = load_config(config_path)
    Session = db.open_store(db_url)
    with Session() as s:
        local = users.count_users(s) == 0
    engine = Engine(config, root=ROOT, progress=progress)
    engine.start()
    ctx = AppContext(config=config, engine=engine, sessionmaker=Session, local_mode=local)
    return ctx, build_app(ctx)


def launch_kwargs(ctx, host: str) -> dict:
    """How to launch: a login in front of everything when accounts exist; local mode only on loopback; no upload
    over MAX_UPLOAD, and uploads from admins only, one file a request, a total per hour (esllm/ui/uploads.py).
    Export files (downloads of «Resultados») are refused to anyone but an admin, link or not. Failed logins are
    throttled (growing waits per user and per client address: the TCP peer unless ESLLM_TRUSTED_PROXIES names a
    proxy), a logged-out browser gets the Spanish login page (esllm/ui/login.py) instead of Gradio's, and
    Gradio's queue routes answer only the login that owns the session (esllm/ui/queue_guard.py)."""
    from gradio.utils import _parse_file_size
    from starlette.middleware import Middleware

    from esllm import EsllmError
    from esllm.ui.addresses import trust_proxies
    from esllm.ui.downloads import guard_middleware
    from esllm.ui.login import LoginPage
    from esllm.ui.login_guard import login_middleware, threaded_login
    from esllm.ui.queue_guard import queue_middleware
    from esllm.ui.uploads import upload_middleware

    try:
        trust_proxies()  # before the server starts: uvicorn reads FORWARDED_ALLOW_IPS then
    except ValueError as e:
        raise EsllmError(str(e)) from None
    guards = [*guard_middleware(ctx), *upload_middleware(ctx, _parse_file_size(MAX_UPLOAD))]
    if ctx.local_mode:
        if host not in LOOPBACK:
            raise EsllmError(
                f"Sin cuentas, esllm solo acepta --host 127.0.0.1 (se pidió {host}): cualquiera en la red sería "
                "administrador. Cree un administrador con `python -m esllm users add NOMBRE --role admin` y vuelva a iniciar.")
        return {"app_kwargs": {"middleware": [*guards, Middleware(LoginPage, login=False)]},
                "max_file_size": MAX_UPLOAD}
    # Logins: the password check runs off the event loop, and failed attempts are throttled (esllm/ui/throttle.py).
    middleware = [*guards, *queue_middleware(ctx), *login_middleware(ctx), Middleware(LoginPage, message=AUTH_MESSAGE)]
    return {"auth": threaded_login(ctx), "auth_message": AUTH_MESSAGE, "app_kwargs": {"middleware": middleware},
            "max_file_size": MAX_UPLOAD}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from esllm import EsllmError
    from esllm.ui import CSS, HEAD

    try:
        ctx, demo = create(args.config)
        extra = launch_kwargs(ctx, args.host)
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mode = "modo local (sin cuentas, usted es administrador)" if ctx.local_mode else "con inicio de sesión"
    print(f"esllm listo, {mode}: abra http://{args.host}:{args.port} en el navegador", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, css=CSS, head=HEAD, show_error=True, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
