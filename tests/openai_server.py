"""OpenAI-compatible servers for the tests, on 127.0.0.1: a real one, llama-cpp-python's server
(`python -m llama_cpp.server`) serving tiny GGUF models with or without a LoRA adapter under model aliases, and a
canned one for what a real server rarely does (error statuses, cut streams, error events, slow answers).

    srv = LlamaServer([{"model_alias": "tiny-base", "model": "m.gguf"},
                       {"model_alias": "tiny-a1", "model": "m.gguf", "lora_path": "a1.gguf"}], api_key="k", folder=tmp)
    srv.start(); ...; srv.stop()          # or srv.kill() to see a server die mid-answer

    canned = CannedServer(lambda n, req: (429, b"{}") if n == 0 else (200, sse("Ho", "la"))).start()
    ...; canned.requests[0]["body"]; canned.stop()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import httpx

from tests.helpers import HOST, free_port


class LlamaServer:
    def __init__(self, models: list[dict[str, Any]], *, api_key: Optional[str], folder: Path,
                 port: Optional[int] = None):
        self.models, self.api_key, self.folder = models, api_key, Path(folder)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.folder / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self, timeout: float = 90.0) -> "LlamaServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = {"host": HOST, "port": self.port, "interrupt_requests": False,  # a new request must not cut another
               "models": [{"n_ctx": 1024, "n_threads": 1, "verbose": False, **m} for m in self.models]}
        if self.api_key:
            cfg["api_key"] = self.api_key
        path = self.folder / f"server-{self.port}.json"
        path.write_text(json.dumps(cfg), encoding="utf-8")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--config_file", str(path)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the test server exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", headers=headers, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the test server did not start in {timeout} s: {self.log.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: the server dies at once, open connections are cut."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def sse(*texts: str, finish: Optional[str] = "stop", usage: Optional[dict] = None, done: bool = True,
        chat: bool = True) -> list[bytes]:
    """The events of a streamed answer made of `texts`: then the finish reason, the usage and [DONE] (each
    left out when None / False)."""
    def choice(text: Optional[str], reason: Optional[str]) -> dict:
        if chat:
            return {"index": 0, "delta": {"content": text} if text is not None else {}, "finish_reason": reason}
        return {"index": 0, "text": text or "", "finish_reason": reason}

    kind = "chat.completion.chunk" if chat else "text_completion"
    chunks = [{"id": "x", "object": kind, "created": 0, "model": "m", "choices": [choice(t, None)]} for t in texts]
    if finish:
        chunks.append({"id": "x", "object": kind, "created": 0, "model": "m", "choices": [choice(None, finish)]})
    if usage:
        chunks.append({"id": "x", "object": kind, "created": 0, "model": "m", "choices": [], "usage": usage})
    events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
    return events + ([b"data: [DONE]\n\n"] if done else [])


Reply = tuple[int, Union[bytes, Iterable[bytes]]]


class CannedServer:
    """A server whose `GET /v1/models` lists `models` and whose n-th POST (0-based) answers `reply(n, request)`:
    a status and either a JSON body or the events of a stream (written one by one, then the connection closes).
    Every POST is kept in `requests` as {"path", "headers" (lower-case keys), "body"}."""

    def __init__(self, reply: Callable[[int, dict], Reply], models: Iterable[str] = ("m",)):
        self.reply, self.models = reply, list(models)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.httpd: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://{HOST}:{self.httpd.server_address[1]}/v1"

    def start(self) -> "CannedServer":
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "esllm"} for m in canned.models]
                self._send(200, json.dumps({"object": "list", "data": data}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with canned.lock:
                    n = len(canned.requests)
                    canned.requests.append({"path": self.path, "body": body,
                                            "headers": {k.lower(): v for k, v in self.headers.items()}})
                self._send(*canned.reply(n, body))

            def _send(self, status: int, payload: Union[bytes, Iterable[bytes]]) -> None:
                self.send_response(status)
                if isinstance(payload, bytes):
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # HTTP/1.0 without a length: the stream ends when the connection closes
                for event in payload:
                    self.wfile.write(event)
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
