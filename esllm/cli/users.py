"""`users add NAME --role rater|admin [--password-stdin]` and `users list` (accounts of the rating store)."""

from __future__ import annotations

import sys

from esllm import EsllmError
from esllm.cli.common import open_store


def register(sub) -> None:
    u = sub.add_parser("users", help="manage rater and admin accounts (upgrades the database schema first)")
    usub = u.add_subparsers(dest="users_cmd", required=True)
    ua = usub.add_parser("add", help="add a user")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["rater", "admin"])
    ua.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    ua.set_defaults(func=cmd_users_add)
    usub.add_parser("list", help="list users").set_defaults(func=cmd_users_list)


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("Contraseña: ")
    if getpass.getpass("Repita la contraseña: ") != first:
        raise EsllmError("Las contraseñas no coinciden.")
    return first


def cmd_users_add(args) -> int:
    from esllm.store.users import add_user

    Session = open_store()
    password = read_password(args.password_stdin)
    with Session.begin() as s:
        user = add_user(s, args.name, password, args.role)
        print(f"Usuario {user.name!r} creado ({user.role}).")
    return 0


def cmd_users_list(args) -> int:
    from esllm.store.users import list_users

    with open_store()() as s:
        users = list_users(s)
        if not users:
            print("No hay usuarios. Cree uno con: python -m esllm users add NOMBRE --role admin")
        for user in users:
            state = "activo" if user.active else "inactivo"
            print(f"{user.name}\t{user.role}\t{state}\t{user.created_at:%Y-%m-%d %H:%M} UTC")
    return 0
