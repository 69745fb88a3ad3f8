"""``inspector users``: the station's users, from its shell (where the first admin is created).

    inspector users add NAME --role operator|engineer|manager|admin
    inspector users list | password NAME | pin NAME [--remove] | role NAME ROLE
    inspector users unlock NAME | remove NAME

Passwords and PINs are asked for twice at a terminal, or read as one line from standard input
(a script: ``printf '%s\\n' "$PASSWORD" | inspector users add ...``); never from the command
line, where other users of the PC would see them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from core.errors import InspectorError
from core.security.access import ADMINISTER, ROLES

if TYPE_CHECKING:
    from core.security.users import UserStore


def _store() -> UserStore:
    from core.records.history import open_history  # the database only for the commands that use it
    from core.security.users import UserStore

    return UserStore(open_history().engine)


def read_secret(what: str) -> str:
    """A password or PIN: typed twice at a terminal, else one line of standard input."""
    if not sys.stdin.isatty():
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = getpass.getpass(f"{what}: ")
        if getpass.getpass(f"{what} again: ") != secret:
            raise InspectorError(f"the two {what.lower()}s differ: nothing was changed")
    if not secret:
        raise InspectorError(f"no {what.lower()} given: nothing was changed")
    return secret


def cmd_add(args: argparse.Namespace) -> None:
    user = _store().add(args.name, args.role, read_secret("Password"))
    print(f"added {user.role} {user.name}")


def cmd_list(args: argparse.Namespace) -> None:
    for row in _store().all():
        locked = row["locked_until"]
        print(f"{row['name']}\t{row['role']}" + ("\tPIN" if row["pin"] else "")
              + (f"\tlocked until {datetime.fromtimestamp(locked):%H:%M}" if locked else ""))


def cmd_password(args: argparse.Namespace) -> None:
    _store().set_password(args.name, read_secret("Password"))
    print(f"{args.name}: password changed")


def cmd_pin(args: argparse.Namespace) -> None:
    _store().set_pin(args.name, None if args.remove else read_secret("PIN"))
    print(f"{args.name}: PIN {'removed' if args.remove else 'set'}")


def cmd_role(args: argparse.Namespace) -> None:
    _store().set_role(args.name, args.role)
    print(f"{args.name} is now {args.role}")


def cmd_unlock(args: argparse.Namespace) -> None:
    _store().unlock(args.name)
    print(f"{args.name}: unlocked")


def cmd_remove(args: argparse.Namespace) -> None:
    _store().remove(args.name)
    print(f"removed {args.name}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``users ...`` to the ``inspector`` command (every one needs the admin role)."""
    users = sub.add_parser("users", help="the station's users and their roles (admin)")
    actions = users.add_subparsers(dest="users_command", required=True)

    def action(name: str, help: str, run, *names: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help)
        for arg in names:
            p.add_argument(arg)
        p.set_defaults(run=run, needs=ADMINISTER)
        return p

    action("add", "add a user (asks for the password)", cmd_add, "name").add_argument(
        "--role", required=True, choices=ROLES)
    action("list", "list the users, their roles and locks", cmd_list)
    action("password", "set a user's password (asks for it)", cmd_password, "name")
    action("pin", "set an operator's quick PIN (asks for it)", cmd_pin, "name").add_argument(
        "--remove", action="store_true", help="remove the PIN instead")
    action("role", "change a user's role", cmd_role, "name").add_argument("role", choices=ROLES)
    action("unlock", "unlock a user locked by wrong passwords", cmd_unlock, "name")
    action("remove", "remove a user", cmd_remove, "name")
