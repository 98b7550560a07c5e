"""A signed cookie that says «this browser logged in as this user before», so a shared address (a lab's NAT,
an ssh tunnel) that someone else floods with failures cannot keep a returning user out.

After a successful login the login guard (esllm/ui/login_guard.py) sets one cookie per user name on that
browser: name `esllm-disp-<16 hex of HMAC(secret, name)>` (the user name is not readable in it), value
`<issued, unix seconds>.<HMAC-SHA256(secret, name|issued), hex>`, `HttpOnly`, `SameSite=Strict`, for
`VALID_FOR` (30 days). A login attempt for that name carrying a valid one is not subject to the per-address
and per-user counters (the per-pair counter still applies). The secret is per install: 32 random bytes in
`secret_path()` (`ESLLM_SECRET_FILE`, default `.cache/esllm-secret.key` in the repository, mode 0600), made
on first use; deleting it voids every such cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Optional

from esllm.paths import ROOT

SECRET_ENV = "ESLLM_SECRET_FILE"
VALID_FOR = 30 * 24 * 3600  # seconds; as long as the throttle remembers an address a user logged in from
PREFIX = "esllm-disp-"


def secret_path() -> Path:
    return Path(os.environ.get(SECRET_ENV) or ROOT / ".cache" / "esllm-secret.key")


def load_secret(path: Optional[Path] = None) -> bytes:
    """The per-install secret, made (atomically, mode 0600) if the file does not exist yet."""
    path = path or secret_path()
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    os.replace(tmp, path)
    return path.read_bytes()


class DeviceCookies:
    """Issue and check the signed per-user browser cookies (see the module docstring)."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self.secret, self.clock = secret, clock

    def _mac(self, text: str) -> str:
        return hmac.new(self.secret, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def name(self, user: str) -> str:
        return PREFIX + self._mac("nombre|" + user)[:16]

    def issue(self, user: str, secure: bool = False) -> bytes:
        """The Set-Cookie header value for `user` (a normalised name)."""
        issued = int(self.clock())
        value = f"{issued}.{self._mac(f'{user}|{issued}')}"
        flags = "; Secure" if secure else ""
        return f"{self.name(user)}={value}; Max-Age={VALID_FOR}; Path=/; HttpOnly; SameSite=Strict{flags}".encode()

    def valid(self, cookies: dict[str, str], user: str) -> bool:
        """Whether `cookies` hold an unexpired cookie signed for `user`."""
        value = cookies.get(self.name(user), "")
        issued, _, mac = value.partition(".")
        if not issued.isdigit() or len(issued) > 12 or len(mac) != 64:
            return False
        if not 0 <= self.clock() - int(issued) < VALID_FOR:
            return False
        return hmac.compare_digest(mac, self._mac(f"{user}|{issued}"))
