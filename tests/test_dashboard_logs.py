"""The dashboard's log viewer (key l) against a recorded source: the lines, search, filter,
follow and export; and the daemon's ``logs`` op it reads, on a real daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Label, RichLog

from aimterm.daemon import Daemon
from aimterm.dashboard.app import DashboardApp
from aimterm.dashboard.logs import LogScreen, export_name, matching
from aimterm.dashboard.screens import TextPrompt
from aimterm.errors import ProtocolError, UnknownInstance
from aimterm.ipc.client import ControlClient
from tests.helpers import wait_for
from tests.test_dashboard_app import NOW, fleet, run, until
from tests.test_groups import daemon  # noqa: F401  (the fixture)

LOG = [f"line {n}: {'ERROR disk full' if n % 10 == 3 else 'ok'}" for n in range(40)]


def test_matching_and_export_names() -> None:
    assert matching(["a Error", "b", "error c"], "ERROR") == [0, 2]
    assert matching(["a"], "") == []
    assert export_name("demo/1 x", NOW).startswith("aimterm-demo_1_x-")


def title(screen: LogScreen) -> str:
    return str(screen.query_one("#log-title", Label).render())


def note(screen: LogScreen) -> str:
    return str(screen.query_one("#log-note", Label).render())


async def type_in(pilot: Pilot[None], text: str) -> None:
    for ch in text:
        await pilot.press("space" if ch == " " else ch)
    await pilot.press("enter")


def test_the_log_viewer_searches_filters_follows_and_exports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where an export goes
    source = fleet()
    source.logs_of["demo-1"] = list(LOG)

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        app.selected = "demo-1"
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen), "the log screen")
        screen = app.screen
        assert isinstance(screen, LogScreen)
        await until(pilot, lambda: screen.lines == LOG, "the log's lines")
        assert screen.query_one(RichLog).lines and "40 lines" in title(screen)
        # Search: the matches counted, the first one selected, following stops.
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the search prompt")
        await type_in(pilot, "error")
        await until(pilot, lambda: "match 1 of 4" in note(screen), "the first match")
        assert "line 4" in note(screen) and not screen.follow
        await pilot.press("n")
        assert "match 2 of 4: line 14" in note(screen)
        await pilot.press("N")
        assert "match 1 of 4" in note(screen)
        # Filter: only the matching lines; an export writes what is on view.
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the filter prompt")
        await type_in(pilot, "disk")
        await until(pilot, lambda: len(screen.shown()) == 4, "the filtered lines")
        assert "4 shown" in title(screen)
        await pilot.press("e")
        assert screen.exported is not None and screen.exported.parent == tmp_path
        assert screen.exported.read_text().splitlines() == [LOG[i] for i in (3, 13, 23, 33)]
        # Follow: an event of the instance fetches the log again.
        await pilot.press("F")
        assert screen.follow
        source.logs_of["demo-1"] = [*LOG, "line 40: new"]
        screen._fetched_at = 0.0  # (the throttle's window has passed)
        source.set_state("demo-1", "busy", ts=NOW)
        await until(pilot, lambda: screen.lines[-1:] == ["line 40: new"], "the new line")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, LogScreen), "back")

    run(source, body)


def test_the_logs_op_renders_an_instances_terminal(daemon: Daemon) -> None:  # noqa: F811
    with ControlClient(daemon.config.socket_path, timeout=30) as client:
        wait_for(lambda: client.call("status")["ready"], "ready")
        client.call("send", prompt="echo first; echo second")
        wait_for(lambda: "second" in client.call("logs", id="bash-1")["lines"],
                 "the turn in the log")
        got = client.call("logs", id="bash-1", lines=2)
        assert len(got["lines"]) == 2 and got["path"].endswith("bash-1.cast")
        for bad, error in (({"id": "nope-1"}, UnknownInstance),
                           ({"id": "bash-1", "previous": 4}, ProtocolError),
                           ({"id": "bash-1", "lines": 0}, ProtocolError)):
            try:
                client.request("logs", bad)
            except error:
                pass
            else:
                raise AssertionError(f"{bad} was taken")


def test_a_job_file_is_started_through_aimterm_jobs_run(tmp_path: Path) -> None:
    """J asks for a job file and runs the jobs command on it with --detach; what the command
    says last (its result, or its one-line error) is shown."""
    import sys

    script = tmp_path / "fake-jobs-run"
    script.write_text("import sys\nargs = sys.argv[1:]\n"
                      "if 'bad.yaml' in args[0]:\n"
                      "    sys.stderr.write('bad.yaml:3: [0].tool: no adapter named nope\\n')\n"
                      "    sys.exit(2)\n"
                      "print('checking'); print('run R1: 1 jobs, in the daemon', *args)\n")
    source = fleet()

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        for name in ("ok.yaml", "bad.yaml"):
            await pilot.press("J")
            await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the path prompt")
            app.screen.query_one("#prompt-input").value = str(tmp_path / name)  # type: ignore[attr-defined]
            await pilot.press("enter")
        await until(pilot, lambda: len(app.said) >= 2, "both answers")
        said = list(app.said)
        assert f"run R1: 1 jobs, in the daemon {tmp_path / 'ok.yaml'} --detach" in said
        assert "bad.yaml:3: [0].tool: no adapter named nope" in said

    run(source, body, jobs_command=[sys.executable, str(script)])


def test_the_metrics_screen_shows_latency_by_tool_tokens_and_the_rate() -> None:
    from textual.widgets import DataTable, Sparkline, Static

    from aimterm.dashboard.screens import MetricsScreen

    source = fleet()
    for n, (iid, ms) in enumerate([("demo-1", 1200.0), ("demo-3", 800.0), ("codex-1", 4000.0)]):
        source.history.append({"seq": 10 + n, "kind": "turn_finished", "instance": iid,
                               "ts": NOW - 5, "turn": 1, "status": "done",
                               "submit_to_busy_ms": 5.0, "busy_to_idle_ms": ms})
    source.history.append({"seq": 20, "kind": "prompt_finished", "instance": "codex-1",
                           "ts": NOW - 4, "request": 1, "status": "done",
                           "tokens": {"input": 900, "output": 100}, "cost_usd": 0.01})

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, MetricsScreen), "the metrics")
        screen = app.screen
        table = screen.query_one(DataTable)
        got = [[str(c) for c in table.get_row_at(r)] for r in range(table.row_count)]
        assert got == [["codex", "1", "4.00s", "4.00s"], ["demo", "2", "0.80s", "1.20s"]]
        counts = str(screen.query_one("#metrics-counts", Static).render())
        assert "1000 tokens" not in counts and "900 input" in counts and "$0.0100" in counts
        assert screen.query_one(Sparkline).data[-1] == 3  # all three ended 5 s ago
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, MetricsScreen), "back")

    run(source, body)
