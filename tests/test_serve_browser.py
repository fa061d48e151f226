"""The `xke serve` web page in a real headless browser (Debian's chromium + chromedriver via selenium):
add an edit, ask with and without the memory, see the edit used, retire it, roll back. Skipped when
chromium, chromedriver or selenium is missing."""

from __future__ import annotations

import math
import shutil
import time

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver not installed "
                                "(apt-get install chromium chromium-driver)")

KEY = "browser-key-0123456789"


@pytest.fixture()
def live(world, tmp_path):
    import xke
    from xke.serve.app import KeyRing, create_app
    from xke.serve.runner import build_service, start_server
    svc = build_service(f"world:{world}", tmp_path / "mem.sqlite", loaded=xke.load(f"world:{world}", device="cpu"),
                        retriever="bm25", threshold=0.0)
    srv = start_server(create_app(svc, KeyRing({KEY: "web"})))
    yield svc, srv
    srv.stop()
    svc.close()


@pytest.fixture()
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def _wait(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting in the browser")


def test_web_page_add_ask_retire_rollback(live, browser):
    from selenium.webdriver.common.by import By
    svc, srv = live
    browser.get(srv.url + "/")
    el = lambda i: browser.find_element(By.ID, i)  # noqa: E731
    _wait(lambda: svc.model_id in el("model-info").text)
    # a write without the key is refused and shown
    el("edit-prompt").send_keys("Where was Ada born?")
    el("edit-target").send_keys("Paris")
    el("add-btn").click()
    _wait(lambda: "API key" in el("status").text)
    assert svc.memory.count() == 0
    el("apikey").send_keys(KEY)
    el("add-btn").click()
    _wait(lambda: browser.find_elements(By.ID, "edit-1"))
    assert "Paris" in el("edit-1").text and svc.memory.get(1).active
    t_added = svc.memory.get(1).created
    # ask: answers with and without the memory, and the edit used
    el("question").send_keys("Where was Ada born?")
    el("ask-btn").click()
    _wait(lambda: el("edits-used").text.startswith("#1"))
    assert el("answer-with").text not in ("", "…") and el("answer-without").text not in ("", "…")
    # retire from the table, after the next whole second (the page's time input has seconds resolution)
    to = math.ceil(t_added)
    time.sleep(max(0.0, to + 0.05 - time.time()))
    el("edit-1").find_element(By.CLASS_NAME, "retire-btn").click()
    _wait(lambda: not browser.find_elements(By.ID, "edit-1"))
    assert not svc.memory.get(1).active
    el("ask-btn").click()
    _wait(lambda: el("edits-used").text == "none")
    # roll back to a time between the edit's creation and its retirement: it is active again
    browser.execute_script("arguments[0].value = arguments[1]", el("rollback-to"),
                           time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(to)))
    el("rollback-btn").click()
    _wait(lambda: browser.find_elements(By.ID, "edit-1"))
    assert svc.memory.get(1).active
    assert [a.actor.split("@")[0] for a in svc.memory.audit()] == ["web", "web", "web"]
