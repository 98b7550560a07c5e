"""User accounts: scrypt password hashes, adding users, logging in.

Hashes are stored as "scrypt$n$r$p$salt_hex$hash_hex" (stdlib hashlib.scrypt, 16-byte random salt), so
the cost parameters can be raised later without breaking existing hashes. Names are stored in lower case
and matched case-insensitively. Messages of EsllmError are for the user (Spanish).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Optional

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store.models import ROLES, User

# n=2**14, r=8, p=1: the interactive-login parameters of the scrypt paper; ~16 MiB and ~50 ms per hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # long inputs only cost CPU time
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{2,39}")


def hash_password(password: str) -> str:
    """A new salted scrypt hash of `password`."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches the stored hash; False for a wrong password or a malformed hash."""
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(hash_hex)
        n, r, p = int(n), int(r), int(p)
        if len(password) > MAX_PASSWORD:
            return False
        digest = _scrypt(password, salt, n, r, p, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = HASH_BYTES) -> bytes:
    # maxmem: OpenSSL's default (32 MiB) is just enough for n=2**14, r=8; leave room for raised costs.
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=256 * 1024 * 1024)


def normalize_name(name: str) -> str:
    return (name or "").strip().lower()


def check_name(name: str) -> str:
    """The normalised name, or EsllmError saying what is wrong with it."""
    norm = normalize_name(name)
    if not NAME_RE.fullmatch(norm):
        raise EsllmError(
            f"Nombre de usuario no válido: {name!r}. Use de 3 a 40 caracteres: letras sin tilde, números, "
            "'.', '_' o '-', empezando por letra o número.")
    return norm


def check_password(password: str) -> None:
    if not password or not password.strip():
        raise EsllmError("La contraseña no puede estar vacía.")
    if len(password) < MIN_PASSWORD:
        raise EsllmError(f"La contraseña es demasiado corta: use al menos {MIN_PASSWORD} caracteres.")
    if len(password) > MAX_PASSWORD:
        raise EsllmError(f"La contraseña es demasiado larga: use como máximo {MAX_PASSWORD} caracteres.")


def add_user(session: Session, name: str, password: str, role: str) -> User:
    """Add an active user (flushed, not committed). EsllmError for a bad name, role, password or a duplicate."""
    norm = check_name(name)
    if role not in ROLES:
        raise EsllmError(f"Rol no válido: {role!r}. Use uno de: {', '.join(ROLES)}.")
    check_password(password)
    if session.scalar(select(User.id).where(User.name == norm)) is not None:
        raise EsllmError(f"Ya existe un usuario llamado {norm!r}.")
    user = User(name=norm, password_hash=hash_password(password), role=role, active=True)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as e:  # added by someone else between the check and the insert
        raise EsllmError(f"Ya existe un usuario llamado {norm!r}.") from e  # the caller's block rolls back
    return user


def authenticate(session: Session, name: str, password: str) -> Optional[User]:
    """The active user with this name and password, else None (same answer for unknown name and wrong password)."""
    user = session.scalars(select(User).where(User.name == normalize_name(name))).first()
    if user is None:
        verify_password(password, _DUMMY_HASH)  # spend the same time: do not reveal which names exist
        return None
    if not verify_password(password, user.password_hash) or not user.active:
        return None
    return user


def count_users(session: Session, role: Optional[str] = None) -> int:
    """How many people have accounts (of `role`, if given; judge models' users never count): with 0 the
    app runs in single-user local mode."""
    q = select(func.count()).select_from(User)
    q = q.where(User.role == role) if role is not None else q.where(User.role.in_(ROLES))
    return session.scalar(q) or 0


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


_DUMMY_HASH = ("scrypt$16384$8$1$" + "00" * SALT_BYTES + "$" + "00" * HASH_BYTES)
