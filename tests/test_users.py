"""Users and roles on a real history database: Argon2 hashes, lockout that holds across a restart,
operators' PINs, the role checks of core's changes, who a browser is, and ``inspector users``."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from core.engine.training import train_tool
from core.errors import InspectorError
from core.records.history import open_history
from core.security.access import (ADMIN, CONFIGURE, ENGINEER, INSPECT, MANAGER, OPERATOR, REPORT,
                                  AccessDenied, User, as_user, require)
from core.security.users import (KIOSK, LOCKOUT_S, MAX_FAILURES, OPEN_STATION, Login, UserStore,
                                 browser_user, users)
from core.station.jobs import start_training
from core.store.datasets import ToolDataset
from core.store.settings import StationSettings, load_settings, save_settings
from core.store.tools import ToolStore
from tests.test_history import postgres_url  # noqa: F401 - a throw-away PostgreSQL server

OP, ENG = User("olga", OPERATOR), User("eric", ENGINEER)


@pytest.fixture
def history(workspace):
    store = open_history(root=workspace)
    yield store
    store.close()


@pytest.fixture
def people(history) -> UserStore:
    store = UserStore(history.engine)
    store.add("ada", ADMIN, "admin-pass-1")
    store.add("olga", OPERATOR, "operator-pass")
    store.add("eric", ENGINEER, "engineer-pass")
    return store


def test_each_role_may_do_its_part_only():
    may = {role: {p for p in (INSPECT, CONFIGURE, REPORT) if User("x", role).may(p)}
           for role in (OPERATOR, ENGINEER, MANAGER, ADMIN)}
    assert may == {OPERATOR: {INSPECT}, ENGINEER: {INSPECT, CONFIGURE, REPORT},
                   MANAGER: {REPORT}, ADMIN: {INSPECT, CONFIGURE, REPORT}}
    with as_user(OP), pytest.raises(AccessDenied) as refused:
        require(CONFIGURE)
    assert "needs the engineer role (you are olga, operator): log in as an engineer" in str(refused.value)
    with as_user(ENG):
        assert require(CONFIGURE) == ENG
    with pytest.raises(InspectorError, match="unknown role 'chief'"):
        User("x", "chief")


def test_passwords_are_argon2_hashes_and_wrong_ones_are_refused(people, history):
    assert people.authenticate("eric", "engineer-pass") == ENG
    with pytest.raises(AccessDenied, match="wrong user name or password"):
        people.authenticate("eric", "engineer-pas")
    with pytest.raises(AccessDenied, match="wrong user name or password"):
        people.authenticate("nobody", "engineer-pass")
    with history.engine.connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash, users.c.pin_hash)).all()
    assert all(h.startswith("$argon2id$") and "pass" not in h and pin is None for h, pin in stored)
    with pytest.raises(InspectorError, match="at least 8 characters"):
        people.add("tim", OPERATOR, "short")
    with pytest.raises(InspectorError, match="not allowed"):
        people.add("cli:root", ADMIN, "long enough")


def test_wrong_passwords_lock_the_account_across_a_restart(people, history, workspace):
    for left in range(MAX_FAILURES - 1, 0, -1):
        with pytest.raises(AccessDenied, match=f"{left} more tries"):
            people.authenticate("olga", "guess")
    with pytest.raises(AccessDenied, match="locked after 5 wrong passwords"):
        people.authenticate("olga", "guess")
    history.close()  # the station restarts: the lock is in the database, not in memory
    restarted = open_history(root=workspace)
    reopened = UserStore(restarted.engine)
    with pytest.raises(AccessDenied, match="is locked .*'inspector users unlock olga'"):
        reopened.authenticate("olga", "operator-pass")  # even the right password
    later = reopened.authenticate("olga", "operator-pass", now=time.time() + LOCKOUT_S + 1)
    assert later == OP
    for _ in range(MAX_FAILURES):
        with pytest.raises(AccessDenied):
            reopened.authenticate("olga", "guess")
    reopened.unlock("olga")
    assert reopened.authenticate("olga", "operator-pass") == OP
    restarted.close()


def test_a_pin_is_for_operators_and_logs_them_in(people):
    people.set_pin("olga", "2468")
    assert people.authenticate("olga", "2468") == OP
    assert people.authenticate("olga", "operator-pass") == OP
    with pytest.raises(InspectorError, match="operators only"):
        people.set_pin("eric", "1357")
    with pytest.raises(InspectorError, match="4 to 8 digits"):
        people.set_pin("olga", "12ab")
    people.set_role("olga", ENGINEER)  # an engineer logs in with a password: the PIN goes
    with pytest.raises(AccessDenied):
        people.authenticate("olga", "2468")
    assert [u["pin"] for u in people.all()] == [False, False, False]


def test_only_an_admin_manages_users_and_the_last_admin_stays(people):
    with as_user(ENG), pytest.raises(AccessDenied, match="users and station settings needs the admin"):
        people.add("tim", OPERATOR, "operator-pass")
    with pytest.raises(InspectorError, match="last admin"):
        people.remove("ada")
    with pytest.raises(InspectorError, match="last admin"):
        people.set_role("ada", ENGINEER)
    people.set_role("eric", ADMIN)
    people.remove("ada")
    assert [u["name"] for u in people.all()] == ["eric", "olga"]


def test_an_operator_cannot_change_tools_photos_or_train_an_engineer_can(workspace, people,
                                                                         history):
    stop = history.listen_to_tool_changes("st1")
    tool = ToolStore(workspace).create("weld")  # the station's own account (a test process)
    photos = ToolDataset(tool.images_dir, tool.config.classes)
    refused = {
        "create": lambda: ToolStore(workspace).create("other"),
        "threshold": lambda: tool.update(threshold=0.7),
        "activate": lambda: tool.activate("v001"),
        "delete": lambda: ToolStore(workspace).delete("weld"),
        "rename": lambda: ToolStore(workspace).rename("weld", "weld 2"),
        "photo": lambda: photos.add_file("good", cv2.imencode(".png", np.zeros((8, 8, 3)))[1].tobytes(),
                                         "a.png"),
        "train": lambda: train_tool(tool),
        "train in the background": lambda: start_training(tool),
    }
    with as_user(OP):
        for what, change in refused.items():
            with pytest.raises(AccessDenied, match="needs the engineer role"):
                change()
                pytest.fail(f"an operator could {what}")
    assert ToolStore(workspace).get("weld").config.threshold == 0.5
    with as_user(ENG):
        tool.update(threshold=0.7)
        with pytest.raises(InspectorError, match="no model version 'v001'"):  # past the role check
            tool.activate("v001")
    history.recorder("st1").flush()
    stop()
    changes = history.changes()
    assert list(zip(changes["action"], changes["actor"])) == [
        ("threshold", "eric"), ("created", getpass.getuser())]


def test_who_a_browser_is(people, history):
    settings = StationSettings(session_timeout_min=15)
    login = Login(ENG, last_seen=1000.0)
    assert browser_user(login, people, settings, now=1000 + 14 * 60) == ENG
    assert browser_user(login, people, settings, now=1000 + 16 * 60) is None  # timed out
    kiosk = StationSettings(kiosk_operator_view=True)
    assert browser_user(None, people, kiosk) == KIOSK and KIOSK.may(INSPECT)
    assert not KIOSK.may(CONFIGURE)
    people.set_role("eric", MANAGER)  # the role the database gives now, not the login's
    assert browser_user(login, people, settings, now=1001) == User("eric", MANAGER)
    people.remove("eric")
    assert browser_user(login, people, settings, now=1001) is None
    empty = UserStore(history.engine)
    with history.engine.begin() as conn:
        conn.execute(users.delete())
    assert browser_user(None, empty, settings) == OPEN_STATION  # a new station is usable
    with pytest.raises(InspectorError, match="must be positive"):
        StationSettings(session_timeout_min=0)


def test_stations_sharing_one_postgresql_share_their_users_and_locks(postgres_url):  # noqa: F811
    history = open_history(StationSettings(history_url=postgres_url))
    other_station = sa.create_engine(postgres_url)  # another PC of the plant, its own connections
    try:
        here, there = UserStore(history.engine), UserStore(other_station)
        here.add("eric", ENGINEER, "engineer-pass")
        assert there.authenticate("eric", "engineer-pass") == ENG
        for _ in range(MAX_FAILURES):
            with pytest.raises(AccessDenied):
                here.authenticate("eric", "guess")
        with pytest.raises(AccessDenied, match="locked"):
            there.authenticate("eric", "engineer-pass")
    finally:
        other_station.dispose()
        history.close()


def test_the_kiosk_opens_the_operator_view_without_a_login_and_nothing_else(workspace, people):
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import APP

    save_settings(StationSettings(kiosk_operator_view=True), workspace)
    home = AppTest.from_file(str(APP / "Home.py"), default_timeout=120).run()
    assert not home.exception and not home.error, [e.value for e in home.error]
    assert "Without a login: operator view (kiosk:no login)." in [c.value for c in home.sidebar.caption]
    assert any("needs the engineer role (you are kiosk:no login, operator)" in i.value
               for i in home.info)  # the tools are shown, managing them is refused
    training = AppTest.from_file(str(APP / "pages/3_Training.py"), default_timeout=120).run()
    assert "needs the engineer role (you are kiosk:no login, operator)" in training.error[0].value
    save_settings(StationSettings(), workspace)  # closed again: nobody without a login
    home.run()
    assert [e.value for e in home.error] == ["Log in (on the left) to use the station."]


def inspector(home, *args, stdin="", role=None):
    env = {**os.environ, "INSPECTOR_HOME": str(home)}
    env.pop("INSPECTOR_ROLE", None)
    if role:
        env["INSPECTOR_ROLE"] = role
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=300)


def test_the_cli_creates_the_first_admin_and_says_which_role_a_command_needs(workspace):
    added = inspector(workspace, "users", "add", "ada", "--role", "admin", stdin="admin-pass-1\n")
    assert added.returncode == 0 and added.stdout.strip() == "added admin ada", added.stderr
    assert inspector(workspace, "users", "add", "olga", "--role", "operator",
                     stdin="operator-pass\n").returncode == 0
    assert inspector(workspace, "users", "pin", "olga", stdin="2468\n").returncode == 0
    listed = inspector(workspace, "users", "list")
    assert listed.stdout.splitlines() == ["ada\tadmin", "olga\toperator\tPIN"]
    assert "admin-pass" not in listed.stdout + added.stdout + added.stderr

    service = inspector(workspace, "create", "--tool", "weld", role="operator")
    assert service.returncode == 2 and "Traceback" not in service.stderr
    assert service.stderr.strip() == (
        "error: changing tools (photos, labels, training, activation, thresholds, import, "
        "delete) needs the engineer role; this shell runs as operator (INSPECTOR_ROLE): unset "
        "INSPECTOR_ROLE or set it to engineer")
    assert not (workspace / "tools" / "weld").exists()
    assert inspector(workspace, "create", "--tool", "weld", role="engineer").returncode == 0
    settings = load_settings(workspace)
    store = open_history(settings, workspace)
    try:
        assert UserStore(store.engine).authenticate("olga", "2468") == OP
        changes = store.changes()
        actor = f"cli:{getpass.getuser()}"
        assert list(zip(changes["tool"], changes["action"], changes["actor"]))[::-1] == [
            ("user:ada", "user added", actor), ("user:olga", "user added", actor),
            ("user:olga", "PIN changed", actor), ("weld", "created", actor)]
    finally:
        store.close()


def test_users_and_access_never_import_torch():
    light = subprocess.run([sys.executable, "-c", "import sys, core.security.users, core.security.access; "
                            "sys.exit('torch' in sys.modules)"], capture_output=True, text=True)
    assert light.returncode == 0, light.stderr
