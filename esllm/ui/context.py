"""The objects every tab needs, passed around in one dataclass (no module globals)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from esllm.config import AppConfig
from esllm.engine import Engine


@dataclass
class AppContext:
    config: AppConfig
    engine: Engine
    # Browser session -> stop flag of the generation it is running (the «Detener» button).
    stops: dict[str, threading.Event] = field(default_factory=dict)
    stops_lock: threading.Lock = field(default_factory=threading.Lock)

    def new_stop(self, session: str) -> threading.Event:
        ev = threading.Event()
        with self.stops_lock:
            old = self.stops.get(session)
            if old is not None:
                old.set()  # a new request from the same tab ends its previous one
            self.stops[session] = ev
        return ev

    def stop(self, session: str) -> bool:
        with self.stops_lock:
            ev = self.stops.get(session)
        if ev is None:
            return False
        ev.set()
        return True
