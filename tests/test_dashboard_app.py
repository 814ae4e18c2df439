"""The dashboard app (Textual pilot) against a recorded source: each panel, the keys, and
what it does when the daemon is not there or goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from aimterm.dashboard.app import DashboardApp
from aimterm.dashboard.keys import KEYS
from aimterm.dashboard.screens import HelpScreen, TextPrompt
from aimterm.dashboard.source import RecordedSource
from aimterm.dashboard.table import FleetTable
from aimterm.dashboard.widgets import (
    ApprovalPanel,
    Banner,
    EventPanel,
    MetricsBar,
    PlanPanel,
    ScreenPreview,
    fit_screen,
)
from tests.test_dashboard_model import row
from tests.test_dashboard_plan import reply as plan_reply

NOW = 1_796_600_000.0
Check = Callable[[DashboardApp], object]


def fleet(**screens: list[str]) -> RecordedSource:
    history = [{"seq": 1, "kind": "daemon_started", "instance": None, "ts": NOW - 60, "pid": 7,
                "version": "0.1.0", "config": None, "recovered": {}},
               {"seq": 2, "kind": "turn_started", "instance": "demo-2", "ts": NOW - 15,
                "turn": 1, "prompt": "edit a.txt: hi", "turn_id": 1},
               {"seq": 3, "kind": "question_pending", "instance": "demo-2", "ts": NOW - 14,
                "question": "Apply edit to a.txt? (y)es/(n)o", "rule": "edit-confirm"}]
    rows = [row("demo-1", "idle", cwd="/work/shop"),
            row("demo-2", "waiting", cwd="/work/shop", question="Apply edit to a.txt? (y)es/(n)o"),
            row("demo-3", "busy", cwd="/work/api", turns=3),
            row("codex-1", "fatal", adapter="codex", restarts=5, fatal_reason="5 fast failures"),
            row("codex-2", "attached", adapter="codex")]
    return RecordedSource.of(rows, history=history, screens=dict(screens))


def run(source: RecordedSource, body: Callable[[DashboardApp, Pilot[None]], Awaitable[None]],
        **kw: Any) -> DashboardApp:
    kw.setdefault("retry_s", 0.05)
    app = DashboardApp(source, clock=lambda: NOW, tick_s=None, **kw)

    async def main() -> None:
        async with app.run_test(size=(130, 40)) as pilot:
            await body(app, pilot)

    asyncio.run(main())
    return app


async def until(pilot: Pilot[None], check: Callable[[], object], what: str,
                timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await pilot.pause(0.01)


def rows(app: DashboardApp) -> list[list[str]]:
    table = app.query_one(FleetTable)
    return [[str(c) for c in table.get_row_at(r)] for r in range(table.row_count)]


def event_lines(app: DashboardApp) -> list[str]:
    return [strip.text.rstrip() for strip in app.query_one(EventPanel).lines]


def preview(app: DashboardApp) -> str:
    return str(app.query_one(ScreenPreview).render())


def test_fleet_is_grouped_attention_first_with_state_colours() -> None:
    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        got = rows(app)
        assert [r[1] for r in got] == ["demo-2", "codex-1", "codex-2", "demo-3", "demo-1"]
        assert [r[0] for r in got] == ["[bold magenta]needs an answer (1)[/]",
                                       "[bold red]failed (1)[/]",
                                       "[bold yellow]working (2)[/]", "", "[bold green]idle (1)[/]"]
        states = {r[1]: r[3] for r in got}
        assert states == {"demo-2": "[bold magenta]waiting[/]", "codex-1": "[bold red]fatal[/]",
                          "codex-2": "[bold blue]attached[/]", "demo-3": "[bold yellow]busy[/]",
                          "demo-1": "[bold green]idle[/]"}
        by_id = {r[1]: r for r in got}
        assert by_id["demo-2"][4] == "15s"  # its turn began 15 s ago (turn_started)
        assert by_id["demo-2"][5] == "/work/shop" and by_id["codex-1"][2] == "codex"
        assert by_id["codex-1"][6] == "[red]5[/]"
        assert "1 needs an answer, 1 failed, 2 working, 1 idle" in str(
            app.query_one(FleetTable).border_title)

    run(fleet(), body)


def test_live_events_regroup_and_time_the_turn() -> None:
    src = fleet()

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        src.set_state("demo-1", "busy", ts=NOW - 3)
        src.push({"kind": "turn_started", "instance": "demo-1", "ts": NOW - 3, "turn": 1,
                  "prompt": "go"})
        await until(pilot, lambda: [r[1] for r in rows(app)][3:] == ["demo-1", "demo-3"],
                    "demo-1 among the working")
        assert rows(app)[3][3:5] == ["[bold yellow]busy[/]", "3s"]
        src.set_state("demo-3", "idle")
        src.push({"kind": "turn_finished", "instance": "demo-3", "ts": NOW, "turn": 3,
                  "status": "done", "submit_to_busy_ms": 1.0, "busy_to_idle_ms": 2500.0,
                  "error": None})
        await until(pilot, lambda: rows(app)[-1][1] == "demo-3", "demo-3 idle")
        assert rows(app)[-1][4] == "-"
        await until(pilot, lambda: "turns 1 done  ·  mean turn 2.5s" in str(
            app.query_one(MetricsBar).render()), "the metrics")

    run(src, body)


def test_working_and_idle_wait_for_the_reorder_but_a_question_comes_first_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import aimterm.dashboard.table as table

    monkeypatch.setattr(table, "REORDER_S", 3600.0)  # (no reorder falls due in this test)
    src = fleet()

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        order = [r[1] for r in rows(app)]
        src.set_state("demo-1", "busy")  # idle -> working: its row stays, its state says so
        await until(pilot, lambda: rows(app)[-1][3] == "[bold yellow]busy[/]", "demo-1 busy")
        assert [r[1] for r in rows(app)] == order
        src.set_state("demo-3", "waiting", question="Run tests? (y)es/(n)o")
        await until(pilot, lambda: [r[1] for r in rows(app)][:2] == ["demo-2", "demo-3"],
                    "demo-3 among those who need an answer")
        # The reorder a question brings puts every row where it belongs.
        assert [r[1] for r in rows(app)] == ["demo-2", "demo-3", "codex-1", "codex-2",
                                             "demo-1"]

    run(src, body)


def test_the_turn_time_moves_on_without_events() -> None:
    now = [NOW]
    src = fleet()

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: rows(app) and rows(app)[0][4] == "15s", "the turn time")
        calls = len(src.screen_calls)
        now[0] = NOW + 60
        await until(pilot, lambda: rows(app)[0][4] == "1m15s", "the clock's redraw")
        assert len(src.screen_calls) == calls  # a redraw, not a fetch

    app = DashboardApp(src, clock=lambda: now[0], tick_s=0.05, retry_s=0.05)

    async def main() -> None:
        async with app.run_test(size=(130, 40)) as pilot:
            await body(app, pilot)

    asyncio.run(main())


def test_preview_follows_the_selection_and_its_events_only() -> None:
    src = fleet(**{"demo-2": ["demo-agent", "Apply edit to a.txt? (y)es/(n)o"],
                   "codex-1": ["codex crashed"]})

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: "Apply edit" in preview(app), "demo-2's screen")
        assert app.selected == "demo-2"  # the first row: the one that needs an answer
        assert "screen · demo-2 (waiting)" in str(app.query_one(ScreenPreview).border_title)
        await pilot.press("down")
        await until(pilot, lambda: "codex crashed" in preview(app), "codex-1's screen")
        calls = len(src.screen_calls)
        src.push({"kind": "process_exited", "instance": "demo-3", "ts": NOW, "pid": 9,
                  "returncode": 1, "signal": None})
        await until(pilot, lambda: any("process_exited" in ln for ln in event_lines(app)),
                    "the event")
        assert len(src.screen_calls) == calls  # not the selected instance: no fetch
        src.screens["codex-1"] = ["codex restarted"]
        src.set_state("codex-1", "starting")
        await until(pilot, lambda: "codex restarted" in preview(app), "the new screen")
        await pilot.press("up")
        await until(pilot, lambda: app.selected == "demo-2", "demo-2 again")

    run(src, body)


def test_a_click_selects_a_row() -> None:
    src = fleet(**{"codex-2": ["a person is here"]})

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        # Row 2 (codex-2) is under the table's border and header.
        await pilot.click(FleetTable, offset=(25, 4))
        await until(pilot, lambda: "a person is here" in preview(app), "codex-2's screen")
        assert app.selected == "codex-2"
        assert app.query_one(FleetTable).selected == "codex-2"

    run(src, body)


def test_a_screen_is_fitted_to_the_panel() -> None:
    screen = ["top", "> hi", "Echo: hi", "", "", "", "", "", "───", "❯", "───", "? help", "", ""]
    assert fit_screen(screen, 20) == screen[:-2]  # it fits: only the rows under it go
    assert fit_screen(screen, 9) == ["top", "> hi", "Echo: hi", "", "───", "❯", "───",
                                     "? help"]  # the blank run squeezed
    assert fit_screen(screen, 3) == ["❯", "───", "? help"]  # then the bottom
    assert fit_screen(["", ""], 5) == []


def test_event_stream_is_colour_coded_and_filtered() -> None:
    src = fleet()
    src.push({"kind": "task_started", "instance": "demo-3", "ts": NOW, "task_id": "t1",
              "tool_id": "demo", "run_id": "R1", "attempt": 1, "mode": "pooled"})
    src.push({"kind": "task_failed", "instance": "codex-1", "ts": NOW, "task_id": "t2",
              "tool_id": "codex", "run_id": "R2", "attempt": 1, "status": "failed",
              "error": "boom", "retrying": False})

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: len(event_lines(app)) == 5, "the history")
        colour = {strip.text.split()[1]: str(next(iter(strip)).style)
                  for strip in app.query_one(EventPanel).lines}
        assert colour == {"daemon_started": "#0000ff", "turn_started": "#ffff00",  # blue, yellow
                          "question_pending": "#ff00ff", "task_started": "#ffff00",  # magenta
                          "task_failed": "#ff0000"}  # red

        async def filter_with(text: str) -> None:
            await pilot.press("slash")
            await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the filter box")
            app.screen.query_one("Input").value = text  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, TextPrompt), "its closing")

        await filter_with("run:R2")
        assert [ln.split()[1] for ln in event_lines(app)] == ["task_failed"]
        assert "events · run:R2" in str(app.query_one(EventPanel).border_title)
        await filter_with("tool:demo kind:task_started,question_pending")
        assert [ln.split()[1] for ln in event_lines(app)] == ["question_pending", "task_started"]
        await filter_with("colour:red")
        assert "unknown filter field 'colour'" in app.said[-1]
        await pilot.press("c")
        assert len(event_lines(app)) == 5
        await pilot.press("i")  # the selected one: demo-2
        assert {ln.split()[2] for ln in event_lines(app)} == {"demo-2"}
        src.push({"kind": "state_changed", "instance": "demo-1", "ts": NOW, "old": "idle",
                  "new": "busy", "reason": "r", "rule": None, "text": None})
        src.push({"kind": "question_answered", "instance": "demo-2", "ts": NOW,
                  "rule": "caller", "question": "Apply?", "keys": "'y'"})
        await until(pilot, lambda: len(event_lines(app)) == 3, "demo-2's live event")
        await pilot.press("i")
        assert len(event_lines(app)) == 7

    run(src, body)


def test_approve_reject_and_typed_answer() -> None:
    src = fleet()

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        panel = app.query_one(ApprovalPanel)
        assert panel.display
        assert "demo-2 asks: Apply edit to a.txt? (y)es/(n)o" in str(panel.render())
        await pilot.press("y")
        await until(pilot, lambda: src.answers, "the approval")
        await pilot.press("n")
        await until(pilot, lambda: len(src.answers) == 2, "the rejection")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the answer box")
        await pilot.press(*"maybe later")
        await pilot.press("enter")
        await until(pilot, lambda: len(src.answers) == 3, "the typed answer")
        assert src.answers == [("demo-2", ["1", "enter"]), ("demo-2", ["escape"]),
                               ("demo-2", ["maybe later", "enter"])]
        assert "approved demo-2" in app.said
        await pilot.press("down")  # codex-1: fatal, asks nothing
        await until(pilot, lambda: app.selected == "codex-1", "codex-1")
        assert "waiting for an answer: demo-2  ·  w selects the next" in str(panel.render())
        await pilot.press("y")
        assert "not waiting" in app.said[-1] and len(src.answers) == 3
        await pilot.press("w")  # back to the one that waits
        assert app.selected == "demo-2"
        src.status["instances"][1]["state"] = "busy"  # answered elsewhere meanwhile
        await pilot.press("y")
        await until(pilot, lambda: "no question is pending" in app.said[-1], "the refusal")

    run(src, body, approve=["1", "enter"], reject=["escape"])


def test_send_a_prompt_to_the_instance_or_the_fleet() -> None:
    src = fleet()

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the prompt box")
        assert "send a prompt to demo-2" in str(app.screen.query_one("#prompt-title").render())
        await pilot.press(*"fix it", "enter")
        await until(pilot, lambda: src.sent, "the prompt")
        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the fleet's box")
        await pilot.press(*"all of you", "enter")
        await until(pilot, lambda: len(src.sent) == 2, "the fleet prompt")
        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the box again")
        await pilot.press("escape")  # cancelled: nothing is sent
        await until(pilot, lambda: not isinstance(app.screen, TextPrompt), "its closing")
        assert src.sent == [{"prompt": "fix it", "to": "demo-2", "tool": None},
                            {"prompt": "all of you", "to": None, "tool": None}]
        await until(pilot, lambda: any("queued (request 2)" in m for m in app.said),
                    "the queued message")

    run(src, body)


def test_take_over_hands_the_terminal_to_attach() -> None:
    ran: list[list[str]] = []

    def attach(argv: list[str]) -> int:
        ran.append(argv)
        return 0

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        await pilot.press("t")  # the headless test driver cannot be suspended
        assert "cannot be handed over; run: aimterm attach -c c.yaml demo-2" in app.said[-1]
        app.suspend = contextlib.nullcontext  # type: ignore[assignment,method-assign]
        await pilot.press("t")
        assert ran == [["aimterm", "attach", "-c", "c.yaml", "demo-2"]]
        assert app.said[-1] == "gave demo-2 back"

    run(fleet(), body, attach_command=["aimterm", "attach", "-c", "c.yaml"], run_command=attach)


def test_plan_panel_shows_the_newest_plan_run_and_follows_it() -> None:
    src = fleet()
    src.plans["R1"] = plan_reply("R1")

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected, "the connection")
        await pilot.press("p")
        panel = app.query_one(PlanPanel)
        assert panel.display and not app.query_one(ScreenPreview).display
        assert "no plan run in this daemon's life yet" in str(panel.render())
        src.push({"kind": "step_changed", "instance": None, "ts": NOW, "run_id": "R1",
                  "step_id": "greet", "old": "pending", "state": "running", "attempt": 1,
                  "reason": None})
        await until(pilot, lambda: "greet" in str(panel.render()), "the plan")
        assert "plan rename-greetings (running)" in str(panel.border_title)
        lines = str(panel.render()).splitlines()
        # A running step is marked ▶ (drawn reversed), the others ●.
        assert lines[1].startswith("L0  ▶ greet") and lines[3].startswith("L1  ● both")
        assert "← greet, farewell" in lines[3]
        src.push({"kind": "step_merged", "instance": None, "ts": NOW, "run_id": "R1",
                  "step_id": "greet", "branch": "b", "commit": "c", "merge_s": 0.1,
                  "gate_s": 0.1})
        await until(pilot, lambda: "greet     succeeded" in str(panel.render()),
                    "greet merged")
        # A newer run, which the daemon does not know (yet): said, and not asked again.
        src.push({"kind": "step_changed", "instance": None, "ts": NOW, "run_id": "R9",
                  "step_id": "x", "old": "pending", "state": "running", "attempt": 1,
                  "reason": None})
        await until(pilot, lambda: "plan run R9: no plan run 'R9'" in str(panel.render()),
                    "the refusal")
        await pilot.press("p")
        assert app.query_one(ScreenPreview).display and not panel.display

    run(src, body)


def test_help_screen_lists_every_key() -> None:
    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        text = str(app.screen.query_one("#help-keys").render())
        for _, _, _, what in KEYS:
            assert what in text
        assert "↑ k" in text and "?" in text
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "its closing")

    run(fleet(), body)


def test_no_daemon_is_a_message_and_it_connects_when_one_comes() -> None:
    src = fleet()
    src.available = False

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        banner = app.query_one(Banner)
        await until(pilot, lambda: banner.display and "not running" in str(banner.render()),
                    "the banner")
        text = str(banner.render())
        assert "the aimterm daemon is not running" in text
        assert "aimterm cluster up" in text and "/recorded/control.sock" in text
        assert "reconnecting" in text
        assert rows(app) == [] and not app.connected
        await pilot.press("y")  # nothing selected: a message, not a crash
        src.revive()
        await until(pilot, lambda: app.connected, "the connection")
        assert not banner.display and len(rows(app)) == 5

    run(src, body)


def test_reconnects_and_rebuilds_when_the_daemon_comes_back() -> None:
    src = fleet(**{"demo-2": ["first daemon"]})

    async def body(app: DashboardApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: "first daemon" in preview(app), "the first screen")
        src.drop()
        banner = app.query_one(Banner)
        await until(pilot, lambda: "lost the daemon" in str(banner.render()), "the banner")
        assert banner.display
        assert "lost the daemon at /recorded/control.sock: the server closed" in str(
            banner.render())
        assert rows(app) == [] and event_lines(app) == []  # nothing stale is kept
        # A new daemon, a new fleet: everything comes from it.
        src.status["instances"] = [row("gemini-1", "idle", adapter="gemini")]
        src.history = [{"seq": 10, "kind": "daemon_started", "instance": None, "ts": NOW,
                        "pid": 8, "version": "0.1.0", "config": None, "recovered": {}}]
        src.screens = {"gemini-1": ["second daemon"]}
        src.revive()
        await until(pilot, lambda: app.connected, "the reconnection")
        assert src.connects == 2 and not banner.display
        assert [r[1] for r in rows(app)] == ["gemini-1"]
        await until(pilot, lambda: "second daemon" in preview(app), "the new screen")
        src.set_state("gemini-1", "busy")
        await until(pilot, lambda: rows(app)[0][3] == "[bold yellow]busy[/]", "live again")

    run(src, body, retry_s=0.5)  # the loss is shown until the next attempt


# -- the main screen, as drawn --------------------------------------------------------------------

@pytest.fixture
def utc() -> Iterator[None]:
    # The event panel shows local times: the snapshot is taken in UTC.
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "UTC")
    time.tzset()
    try:
        yield
    finally:
        mp.undo()
        time.tzset()


def test_main_screen_snapshot(snap_compare: Callable[..., bool], utc: None) -> None:
    src = fleet(**{"demo-2": ["demo-agent · /work/shop", "> edit a.txt: hi", "",
                              "  Apply edit to a.txt? (y)es/(n)o"]})
    app = DashboardApp(src, clock=lambda: NOW, tick_s=None)

    async def ready(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.connected and "Apply edit" in preview(app),
                    "the first screen")

    assert snap_compare(app, terminal_size=(130, 36), run_before=ready)



def test_the_command_finds_the_cluster_like_the_others(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import aimterm.dashboard
    from aimterm.cli.main import cli

    calls: list[tuple[str, dict[str, Any]]] = []

    def fake(socket_path: str, **kw: Any) -> int:
        calls.append((socket_path, kw))
        return 0

    monkeypatch.setattr(aimterm.dashboard, "run_dashboard", fake)
    state = tmp_path / "state"
    out = CliRunner().invoke(cli, ["dashboard", "--state-dir", str(state), "--approve",
                                   "1", "--reject", "escape"])
    assert out.exit_code == 0, out.output
    socket_path, kw = calls[0]
    assert socket_path == str(state / "control.sock")
    assert kw["approve"] == ["1"] and kw["reject"] == ["escape"]
    assert kw["attach_command"][-4:] == ["aimterm", "attach", "--state-dir", str(state)]
