"""Which address a request comes from, for the login throttle: the TCP peer, unless a proxy is named.

uvicorn (which Gradio runs) replaces the peer in the ASGI scope by the `X-Forwarded-For` address when the peer
is in `FORWARDED_ALLOW_IPS`, which defaults to 127.0.0.1: anyone reaching the app from the same host (an
`ssh -L` tunnel) could then pick any address, a fresh throttle budget each time. `trust_proxies()`, called by
app.launch_kwargs before the server starts, sets `FORWARDED_ALLOW_IPS` from `ESLLM_TRUSTED_PROXIES` (a
comma-separated list of proxy addresses or networks, e.g. `127.0.0.1,10.0.0.5`), empty by default: then no
header is believed and the client is the TCP peer. With proxies named, uvicorn takes the right-most
`X-Forwarded-For` address that is not one of them (nginx: `proxy_set_header X-Forwarded-For
$proxy_add_x_forwarded_for;` appends the address it saw).

`client_key(scope)` is the address as the throttle counts it, or None when it is not an IP address (a made-up
header from a trusted proxy) or the header is over `MAX_FORWARDED` bytes: the login is then refused. IPv6
addresses count by their /64 (one host usually holds a whole /64).
"""

from __future__ import annotations

import ipaddress
import os
from typing import MutableMapping, Optional

TRUSTED_ENV = "ESLLM_TRUSTED_PROXIES"
UVICORN_ENV = "FORWARDED_ALLOW_IPS"  # read by uvicorn.Config when the server starts
MAX_FORWARDED = 1024  # bytes of X-Forwarded-For: a chain of a few proxies is well under 200
IPV6_PREFIX = 64


def trusted_proxies(env: MutableMapping[str, str] = os.environ) -> list[str]:
    """The proxies named in ESLLM_TRUSTED_PROXIES, each checked (ValueError naming a bad one)."""
    out = []
    for item in (env.get(TRUSTED_ENV) or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{TRUSTED_ENV}: «{item[:60]}» no es una dirección IP ni una red "
                             "(ejemplo: 127.0.0.1,10.0.0.0/24)") from None
        out.append(item)
    return out


def trust_proxies(env: MutableMapping[str, str] = os.environ) -> list[str]:
    """Make uvicorn believe X-Forwarded-For from the ESLLM_TRUSTED_PROXIES addresses only (none by default: an
    empty FORWARDED_ALLOW_IPS trusts nobody). Call before the server starts; returns the proxies."""
    proxies = trusted_proxies(env)
    env[UVICORN_ENV] = ",".join(proxies)
    return proxies


def client_key(scope: dict) -> Optional[str]:
    """The client's address as the throttle keys it (IPv6: its /64), or None if it must be refused."""
    forwarded = sum(len(v) for k, v in scope.get("headers") or [] if k == b"x-forwarded-for")
    if forwarded > MAX_FORWARDED:
        return None
    client = scope.get("client")
    if not client:
        return "desconocida"  # no peer at all (a test client): one shared counter
    host = str(client[0])
    if len(host) > 64:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)
