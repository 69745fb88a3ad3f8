"""The station's users: accounts in the history database, logins, lockout and session timeout.

Accounts live in the ``users`` table of the history database (``core.records.history.open_history``
migrates it), so the stations of a plant sharing one PostgreSQL server share their users.
Passwords and operators' PINs are stored only as Argon2 hashes (argon2-cffi) and never logged.
``MAX_FAILURES`` wrong secrets in a row lock an account for ``LOCKOUT_S``; the count and the
lock are columns of the table, so they hold across browsers, stations and restarts.

Who acts from a browser (``browser_user``): its login while it is fresh (idle less than the
station's ``session_timeout_min``), else whoever may act without one: anyone, as ``OPEN_STATION``
(admin), while the station has no user at all, so a new station is usable until its first admin
is created; the kiosk's operator view (``KIOSK``) if the station allows it; else nobody.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, replace

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import InspectorError
from core.security.access import ADMIN, ADMINISTER, OPERATOR, AccessDenied, User, require
from core.store.settings import StationSettings
from core.store.tools import announce

MAX_FAILURES = 5  # wrong secrets in a row before the account is locked
LOCKOUT_S = 300.0
MIN_PASSWORD = 8
_PIN = re.compile(r"^[0-9]{4,8}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")  # no ':': cli:, open:, kiosk: are ours
WRONG = "wrong user name or password"

OPEN_STATION = User("open:no users yet", ADMIN)
KIOSK = User("kiosk:no login", OPERATOR)

metadata = sa.MetaData()
users = sa.Table(  # migration 0004
    "users", metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("role", sa.String(), nullable=False),
    sa.Column("password_hash", sa.String(), nullable=False),
    sa.Column("pin_hash", sa.String()),
    sa.Column("failures", sa.Integer(), nullable=False),
    sa.Column("locked_until", sa.Double()),
    sa.Column("created", sa.Double(), nullable=False),
)

_hasher = PasswordHasher()


def _matches(hashed: str | None, secret: str) -> bool:
    try:
        return hashed is not None and _hasher.verify(hashed, secret)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _decoy() -> str:
    """A hash to verify an unknown name against: a wrong name costs the time a wrong password
    does, so timing does not tell which names exist."""
    return _hasher.hash("no such user")


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InspectorError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


class UserStore:
    """The users of one history database (``UserStore(open_history().engine)``)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def _writing(self) -> sa.Connection:
        return self.engine.connect().execution_options(sqlite_immediate=True)

    def _row(self, name: str) -> sa.RowMapping | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()

    def _existing(self, name: str) -> sa.RowMapping:
        row = self._row(name)
        if row is None:
            raise InspectorError(f"no user named '{name}' (see 'inspector users list')")
        return row

    def _set(self, name: str, **values: object) -> None:
        with self._writing() as conn, conn.begin():
            conn.execute(users.update().where(users.c.name == name).values(**values))

    # -------------------------------------------------------------- reading

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()

    def get(self, name: str) -> User | None:
        row = self._row(name)
        return None if row is None else User(row["name"], row["role"])

    def all(self) -> list[dict]:
        """Every user with its role, whether it has a PIN and until when it is locked (None:
        it is not)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.name)).mappings().all()
        now = time.time()
        return [{"name": r["name"], "role": r["role"], "pin": r["pin_hash"] is not None,
                 "locked_until": r["locked_until"] if (r["locked_until"] or 0) > now else None}
                for r in rows]

    # -------------------------------------------------------------- administering (admin only)

    def add(self, name: str, role: str, password: str) -> User:
        require(ADMINISTER)
        if not _NAME.match(name):
            raise InspectorError(f"user name '{name}' is not allowed: use 1-64 letters, digits, "
                                 "'_', '.', '@' or '-', starting with a letter or digit")
        user = User(name, role)  # validates the role
        if self._row(name) is not None:
            raise InspectorError(f"a user named '{name}' already exists")
        with self._writing() as conn, conn.begin():
            conn.execute(users.insert().values(
                name=name, role=role, password_hash=_hasher.hash(_check_password(password)),
                failures=0, created=time.time()))
        announce(f"user:{name}", "user added", role=role)
        return user

    def set_password(self, name: str, password: str) -> None:
        require(ADMINISTER)
        self._existing(name)
        self._set(name, password_hash=_hasher.hash(_check_password(password)))
        announce(f"user:{name}", "password changed")

    def set_pin(self, name: str, pin: str | None) -> None:
        """The quick login of an operator at the kiosk (None removes it)."""
        require(ADMINISTER)
        if self._existing(name)["role"] != OPERATOR:
            raise InspectorError("a PIN is for operators only: the other roles log in with a "
                                 "password")
        if pin is not None and not _PIN.match(pin):
            raise InspectorError("a PIN is 4 to 8 digits")
        self._set(name, pin_hash=None if pin is None else _hasher.hash(pin))
        announce(f"user:{name}", "PIN changed" if pin else "PIN removed")

    def set_role(self, name: str, role: str) -> None:
        """A new role; leaving the operators drops the PIN (the other roles need a password)."""
        require(ADMINISTER)
        old = self._existing(name)["role"]
        User(name, role)  # validates the role
        if old == ADMIN and role != ADMIN:
            self._keep_an_admin()
        self._set(name, role=role, **({} if role == OPERATOR else {"pin_hash": None}))
        announce(f"user:{name}", "role", old=old, new=role)

    def unlock(self, name: str) -> None:
        require(ADMINISTER)
        self._existing(name)
        self._set(name, failures=0, locked_until=None)
        announce(f"user:{name}", "unlocked")

    def remove(self, name: str) -> None:
        require(ADMINISTER)
        if self._existing(name)["role"] == ADMIN:
            self._keep_an_admin()
        with self._writing() as conn, conn.begin():
            conn.execute(users.delete().where(users.c.name == name))
        announce(f"user:{name}", "user removed")

    def _keep_an_admin(self) -> None:
        with self.engine.connect() as conn:
            admins = conn.execute(sa.select(sa.func.count()).select_from(users)
                                  .where(users.c.role == ADMIN)).scalar_one()
        if admins <= 1:
            raise InspectorError("this is the station's last admin: make another user admin first")

    # -------------------------------------------------------------- logging in

    def authenticate(self, name: str, secret: str, now: float | None = None) -> User:
        """The user, if ``secret`` is their password (or, for an operator, their PIN) and the
        account is not locked; every wrong secret counts towards the lockout."""
        now = time.time() if now is None else now
        row = self._row(name)
        if row is None:
            _matches(_decoy(), secret)
            raise AccessDenied(WRONG)
        if row["locked_until"] is not None and row["locked_until"] > now:
            raise AccessDenied(_locked(name, row["locked_until"] - now))
        pin_ok = row["role"] == OPERATOR and _matches(row["pin_hash"], secret)
        if pin_ok or _matches(row["password_hash"], secret):
            fresh = {} if pin_ok or not _hasher.check_needs_rehash(row["password_hash"]) else {
                "password_hash": _hasher.hash(secret)}
            self._set(name, failures=0, locked_until=None, **fresh)
            return User(row["name"], row["role"])
        with self._writing() as conn, conn.begin():
            match = users.c.name == name
            conn.execute(users.update().where(match).values(failures=users.c.failures + 1))
            failures = conn.execute(sa.select(users.c.failures).where(match)).scalar_one()
            if failures >= MAX_FAILURES:
                conn.execute(users.update().where(match).values(failures=0,
                                                                locked_until=now + LOCKOUT_S))
        if failures >= MAX_FAILURES:
            announce(f"user:{name}", "locked", failures=failures, seconds=LOCKOUT_S)
            raise AccessDenied(_locked(name, LOCKOUT_S))
        raise AccessDenied(f"{WRONG} ({MAX_FAILURES - failures} more tries before '{name}' is "
                           "locked)")


def _locked(name: str, seconds: float) -> str:
    return (f"'{name}' is locked after {MAX_FAILURES} wrong passwords: try again in "
            f"{max(1, round(seconds / 60))} min, or ask an admin to unlock it "
            f"('inspector users unlock {name}')")


# ------------------------------------------------------------------ a browser's session

@dataclass(frozen=True)
class Login:
    """One browser's login: who, and when they last did something (the session timeout)."""

    user: User
    last_seen: float

    def expired(self, timeout_min: float, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self.last_seen > timeout_min * 60

    def touched(self, now: float | None = None) -> Login:
        return replace(self, last_seen=time.time() if now is None else now)


def browser_user(login: Login | None, store: UserStore, settings: StationSettings,
                 now: float | None = None) -> User | None:
    """Who acts from a browser: its login while fresh, with the role the database gives it now
    (a removed user is out at once); else ``OPEN_STATION`` while there is no user; else
    ``KIOSK`` if the station opens the operator view without a login; else nobody (None)."""
    if login is not None and not login.expired(settings.session_timeout_min, now):
        current = store.get(login.user.name)
        if current is not None:
            return current
    if store.count() == 0:
        return OPEN_STATION
    return KIOSK if settings.kiosk_operator_view else None
