"""Roles in real Chromium: an operator (logged in with their PIN) is refused the Training page
and a threshold on Live inspection, by the page and by core; an engineer may do both; wrong
passwords lock the account after the limit; an idle session times out. One server, the
session's trained casting tool on the line, users in the station's history database."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace

import pytest

from core.records.history import open_history
from core.security.users import MAX_FAILURES, UserStore
from core.store.settings import load_settings, save_settings
from core.store.tools import ToolStore
from tests.browser import helpers
from tests.browser.helpers import ARTIFACTS, log_in, new_page, open_page

pytestmark = pytest.mark.slow

REFUSED = "needs the engineer role (you are olga, operator)"
SLIDER = "Threshold (FAIL at or above)"


@pytest.fixture(scope="module")
def home(station, tmp_path_factory):
    """The session's trained tool in a workspace of its own, with an admin, an engineer and an
    operator whose PIN is 2468."""
    home = tmp_path_factory.mktemp("roles")
    shutil.copytree(station["home"] / "tools", home / "tools")
    if (station["home"] / "cache").is_dir():
        shutil.copytree(station["home"] / "cache", home / "cache")
    history = open_history(load_settings(home), home)
    users = UserStore(history.engine)
    users.add("ada", "admin", "admin-pass-1")
    users.add("eric", "engineer", "engineer-pass")
    users.add("olga", "operator", "operator-pass")
    users.set_pin("olga", "2468")
    users.add("lena", "operator", "operator-pass")
    history.close()
    return home


@pytest.fixture(scope="module")
def url(home, tmp_path_factory):
    with helpers.serving(home, tmp_path_factory.mktemp("roles_server") / "streamlit.log") as address:
        yield address


@pytest.fixture
def tab(browser, url):
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_page(browser)
    open_page(page, url, "", "Shopfloor Inspector", "Log in")
    yield page
    page.context.close()


def go_to(page, link: str, heading: str) -> None:
    """Through the sidebar's page links: the same browser session, so the same login."""
    page.get_by_role("link", name=link).click()
    page.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)


def audit(home, action: str):
    history = open_history(load_settings(home), home)
    changes = history.changes()
    return changes[changes["action"] == action]


def test_an_operator_cannot_reach_training_or_change_a_threshold(tab, home):
    log_in(tab, "olga", "2468")  # the kiosk's quick PIN
    tab.get_by_text("Logged in as olga (operator)").wait_for(timeout=20_000)
    go_to(tab, "Training", "Training")
    tab.get_by_text(REFUSED).wait_for(timeout=20_000)
    assert tab.get_by_text("Model versions").count() == 0
    go_to(tab, "Live inspection", "Live inspection")
    slider = tab.get_by_role("slider", name=SLIDER)
    before = float(slider.input_value())
    slider.focus()
    slider.press("End")  # threshold 1: the callback asks core, which refuses
    tab.get_by_text(REFUSED).wait_for(timeout=20_000)
    tab.screenshot(path=str(ARTIFACTS / "roles-operator-threshold-refused.png"))
    assert float(tab.get_by_role("slider", name=SLIDER).input_value()) == before
    assert ToolStore(home).get("casting").config.threshold == pytest.approx(before, abs=0.006)
    assert audit(home, "threshold (trial)").empty


def test_an_engineer_can_train_and_change_a_threshold(tab, home):
    log_in(tab, "eric", "engineer-pass")
    tab.get_by_text("Logged in as eric (engineer)").wait_for(timeout=20_000)
    go_to(tab, "Training", "Training")
    tab.get_by_text("Model versions").wait_for(timeout=30_000)
    assert tab.get_by_role("button", name="Start training").is_enabled()
    go_to(tab, "Live inspection", "Live inspection")
    slider = tab.get_by_role("slider", name=SLIDER)
    slider.focus()
    slider.press("End")
    tab.get_by_text(re.compile(r"TRIAL threshold 1\.00.*by eric")).first.wait_for(timeout=20_000)
    row = audit(home, "threshold (trial)").iloc[0]
    assert row["actor"] == "eric" and row["details"]["new"] == 1.0
    tab.get_by_role("button", name="Revert").click()
    tab.get_by_text("A change judges at once").wait_for(timeout=20_000)


def test_wrong_passwords_lock_the_account_after_the_limit(tab):
    for left in range(MAX_FAILURES - 1, 0, -1):
        log_in(tab, "lena", "not her password")
        tab.get_by_text(f"{left} more tries before 'lena' is locked").wait_for(timeout=20_000)
    log_in(tab, "lena", "not her password")
    tab.get_by_text("'lena' is locked after 5 wrong passwords").wait_for(timeout=20_000)
    log_in(tab, "lena", "operator-pass")  # the right one, too late
    tab.get_by_text("'lena' is locked after 5 wrong passwords").wait_for(timeout=20_000)
    tab.screenshot(path=str(ARTIFACTS / "roles-locked.png"))
    assert tab.get_by_text("Logged in as lena").count() == 0


def test_an_idle_session_times_out(tab, home):
    log_in(tab, "eric", "engineer-pass")
    tab.get_by_text("Logged in as eric (engineer)").wait_for(timeout=20_000)
    settings = load_settings(home)
    save_settings(replace(settings, session_timeout_min=0.1), home)
    try:
        tab.wait_for_timeout(8000)  # idle for longer than 6 s
        go_to(tab, "Training", "Training")
        tab.get_by_text("Your session timed out after 0.1 min").wait_for(timeout=20_000)
        tab.get_by_text("needs the engineer role (nobody is logged in)").wait_for(timeout=20_000)
        assert tab.get_by_text("Logged in as eric").count() == 0
    finally:
        save_settings(settings, home)
