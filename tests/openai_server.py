"""A real OpenAI-compatible server for the tests: llama-cpp-python's server (`python -m llama_cpp.server`) on
127.0.0.1, serving tiny GGUF models with or without a LoRA adapter under model aliases.

    srv = LlamaServer([{"model_alias": "tiny-base", "model": "m.gguf"},
                       {"model_alias": "tiny-a1", "model": "m.gguf", "lora_path": "a1.gguf"}], api_key="k", folder=tmp)
    srv.start(); ...; srv.stop()          # or srv.kill() to see a server die mid-answer
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

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
