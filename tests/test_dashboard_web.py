"""``aimterm dashboard --web`` end to end: a real daemon of demo agents, the real server, and
real headless Chromium (Debian's ``chromium``). Without the token the server answers 403 and
no page; with it, two tabs each run a live dashboard: a prompt sent from one tab makes an
instance wait in both, an answer from the page makes it idle again in both.

The page draws the terminal on a canvas (xterm.js), so there is no text in the DOM: a script
run before the page's own catches the xterm.js ``Terminal`` textual-serve creates, and the
test reads its buffer — the cells the page draws."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.test_daemon import Cluster, cluster, up  # noqa: F401  (the fixture)

CHROMIUM = "/usr/bin/chromium"

#: textual-serve's page does ``this.terminal = new Terminal(...)`` on its own object; a
#: setter on Object.prototype sees that assignment and keeps the terminal for the test.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true});
    if (this.websocket_url !== undefined) { window.__aimtermTerminal = value; }
  },
});
"""
SCREEN_TEXT = """() => {
  const t = window.__aimtermTerminal;
  if (!t) { return ""; }
  const b = t.buffer.active, rows = [];
  for (let y = 0; y < t.rows; y++) {
    const line = b.getLine(b.viewportY + y);
    rows.push(line ? line.translateToString(true) : "");
  }
  return rows.join("\\n");
}"""


def until(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def status_code(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def stop(server: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Stop the server with ``sig``: it exits 0, and every dashboard it started for a tab
    goes with it."""
    if server.poll() is not None:
        return
    children = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
    server.send_signal(sig)
    try:
        _, err = server.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate()
        raise
    assert server.returncode == 0, err
    until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                          != psutil.STATUS_ZOMBIE for p in children),
          "the tabs' dashboards to end", timeout=10)


@pytest.fixture
def web(cluster: Cluster) -> Iterator[tuple[subprocess.Popen[str], str]]:  # noqa: F811
    """The ``--web`` server on a free port, and the address it printed."""
    server = subprocess.Popen(
        [sys.executable, "-m", "aimterm", "dashboard", "--web", "--port", "0", "-c",
         str(cluster.config), "--retry", "0.2"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 20)
        line = server.stdout.readline() if ready else ""
        assert line.startswith("aimterm dashboard: http://127.0.0.1:"), (
            f"no address line: {line!r}")
        yield server, line.split(": ", 1)[1].strip()
    finally:
        stop(server, signal.SIGTERM)


def test_dashboard_in_a_browser(cluster: Cluster, web: tuple[subprocess.Popen[str], str],  # noqa: F811
                                tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        # As the live CLI tests are: skipped with the reason on a machine without it, but
        # never in CI, which installs it and says so (AIMTERM_REQUIRE_BROWSER=1).
        message = f"no {CHROMIUM}: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("AIMTERM_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import Page, sync_playwright

    cluster.config.write_text("state_dir: state\ninstances:\n  - adapter: demo\n    count: 2\n"
                              "    env: {AIMTERM_DEMO_THINK: '0.3'}\n")
    up(cluster)
    server, url = web
    root = url.rsplit("/", 2)[0]  # http://127.0.0.1:PORT
    token = url.rstrip("/").rsplit("/", 1)[1]

    # No token, a wrong one, or the right one elsewhere than the first segment: no page.
    for bad in (f"{root}/", f"{root}/?token={token}", f"{root}/{token[:-1]}x/",
                f"{root}/static/js/textual.js", f"{root}/ws", f"{root}/x/{token}/"):
        code, body = status_code(bad)
        assert code == 403 and "textual" not in body, (bad, code, body)
    assert status_code(url)[0] == 200

    def screen(page: Page) -> str:
        return str(page.evaluate(SCREEN_TEXT))

    def row(page: Page, iid: str) -> str:
        return next((ln for ln in screen(page).splitlines() if f" {iid} " in ln), "")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        pages: list[Page] = []
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 900})
            context.add_init_script(CATCH_TERMINAL)
            refused = context.new_page()
            response = refused.goto(f"{root}/")
            assert response is not None and response.status == 403
            refused.close()

            for _ in range(2):  # two tabs at once, each its own live dashboard
                page = context.new_page()
                pages.append(page)
                page.goto(url, wait_until="domcontentloaded")
            first, second = pages
            for page in pages:
                until(lambda: all("idle" in row(page, i) for i in ("demo-1", "demo-2")),  # noqa: B023
                      "two idle instances in the page", timeout=30)

            # An edit outside its folder: the demo agent asks, and nothing answers for us.
            first.focus("textarea.xterm-helper-textarea")
            first.keyboard.press("s")  # to the selected instance: demo-1
            until(lambda: "send a prompt to demo-1" in screen(first), "the prompt box")
            first.keyboard.type("edit ../web-x.txt: hi")
            first.keyboard.press("Enter")
            for page in pages:
                until(lambda: "waiting" in row(page, "demo-1"), "demo-1 waiting")  # noqa: B023
                until(lambda: "Apply edit to ../web-x.txt?" in screen(page),  # noqa: B023
                      "the question")
            first.keyboard.press("n")  # reject, from the page
            for page in pages:
                until(lambda: "idle" in row(page, "demo-1")  # noqa: B023
                      and "needs an answer" not in screen(page), "demo-1 idle again")  # noqa: B023
            until(lambda: "Edit to ../web-x.txt declined." in screen(first), "the reply")
            # Ctrl-C with both tabs still open: each tab's dashboard ends with the server.
            assert len(psutil.Process(server.pid).children()) == 2
            stop(server, signal.SIGINT)
        except BaseException:
            for n, page in enumerate(pages):
                page.screenshot(path=str(tmp_path / f"tab-{n}.png"))
                print(f"tab {n} ({tmp_path / f'tab-{n}.png'}):\n{screen(page)}")
            raise
        finally:
            browser.close()
