"""Who may change the station: roles, what each may do, and who is acting here and now.

``PERMISSIONS`` is the one table of the rules; ``require`` is called by the operations of
``core`` that change the station (training, activation, tool settings, deleting, importing,
users...), so a refusal holds whatever calls them: a page, a widget's callback, the CLI.

Who acts is, in order: whoever ``as_user`` names for a block of code (a training thread runs
as the engineer who started it), else whoever the process's ``identify_callers`` lookup names:
the web app's logged-in browser session, the CLI's shell user. A plain Python process (a script,
a test) is the station's own account, trusted like its shell. This module is light on purpose:
``core.store.tools`` imports it, and it imports nothing of the station.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from core.errors import InspectorError

OPERATOR, ENGINEER, MANAGER, ADMIN = "operator", "engineer", "manager", "admin"
ROLES = (OPERATOR, ENGINEER, MANAGER, ADMIN)

INSPECT = "inspect"
CONFIGURE = "configure"
REPORT = "report"
ADMINISTER = "administer"

# permission -> (what it covers, in words; the roles that have it, the least one first)
PERMISSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    INSPECT: ("live inspection and triggers", (OPERATOR, ENGINEER, ADMIN)),
    CONFIGURE: ("changing tools (photos, labels, training, activation, thresholds, import, "
                "delete)", (ENGINEER, ADMIN)),
    REPORT: ("the history and its reports", (MANAGER, ENGINEER, ADMIN)),
    ADMINISTER: ("users and station settings", (ADMIN,)),
}


class AccessDenied(InspectorError):
    """Refused for who is acting: a wrong login, or a role without the permission (then the
    message says which role has it)."""

    def __init__(self, message: str, permission: str | None = None):
        super().__init__(message)
        self.permission = permission


@dataclass(frozen=True)
class User:
    """Someone who acts on the station: a name for the audit trail and a role for the rules."""

    name: str
    role: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InspectorError(f"unknown role '{self.role}': use one of {', '.join(ROLES)}")

    def may(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission][1]


def needed_role(permission: str) -> str:
    """The least role that has ``permission``."""
    return PERMISSIONS[permission][1][0]


def refusal(permission: str, user: User | None) -> str:
    """Why ``user`` may not do it and what to do: log in with the least role that may."""
    role = needed_role(permission)
    who = "nobody is logged in" if user is None else f"you are {user.name}, {user.role}"
    return (f"{PERMISSIONS[permission][0]} needs the {role} role ({who}): log in as "
            f"{'an' if role[0] in 'aeiou' else 'a'} {role}")


def station_account() -> User:
    """The station's own OS account: a plain Python process, trusted like the station's shell."""
    return User(getpass.getuser(), ADMIN)


CallerLookup = Callable[[], User | None]
_lookup: list[CallerLookup] = [station_account]
_acting: ContextVar[User | None] = ContextVar("acting_user", default=None)


def identify_callers(lookup: CallerLookup) -> None:
    """How this process finds who acts where no ``as_user`` says: the web app looks up the
    browser session (nobody outside one), the CLI names its shell user."""
    _lookup[0] = lookup


@contextlib.contextmanager
def as_user(user: User) -> Iterator[None]:
    """Run the block as ``user`` (a training thread as the engineer who started it)."""
    token = _acting.set(user)
    try:
        yield
    finally:
        _acting.reset(token)


def acting_user() -> User | None:
    """Who acts here: ``as_user``, else the process's lookup; None is nobody (not logged in)."""
    return _acting.get() or _lookup[0]()


def require(permission: str) -> User:
    """The acting user, if their role has ``permission``; else ``AccessDenied`` saying which
    role does."""
    user = acting_user()
    if user is None or not user.may(permission):
        raise AccessDenied(refusal(permission, user), permission)
    return user
