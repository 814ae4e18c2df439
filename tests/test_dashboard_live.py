"""The dashboard against a real daemon of demo agents, over its socket: it waits for the
daemon, rebuilds the fleet from it, sees a prompt sent from its own keys make an instance
busy, then wait on a question it rejects, then idle again; previews that instance's screen,
and notices the daemon going away."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from textual.pilot import Pilot

from aimterm.dashboard.app import DashboardApp
from aimterm.dashboard.source import LiveSource
from aimterm.dashboard.widgets import ApprovalPanel, Banner
from tests.test_daemon import Cluster, cluster, up  # noqa: F401  (the fixture)
from tests.test_dashboard_app import event_lines, preview, rows
from tests.test_dashboard_app import until as app_until


async def until(pilot: Pilot[None], check: Callable[[], object], what: str,
                timeout: float = 30.0) -> None:
    await app_until(pilot, check, what, timeout)  # (a real daemon: a longer deadline)


def test_dashboard_follows_a_real_daemon(cluster: Cluster) -> None:  # noqa: F811
    cluster.config.write_text("state_dir: state\ninstances:\n  - adapter: demo\n    count: 2\n"
                              "    env: {AIMTERM_DEMO_THINK: '1.0'}\n")

    async def first() -> None:
        # Started before the daemon: it says so, and connects once there is one.
        app = DashboardApp(LiveSource(str(cluster.socket)), retry_s=0.1)
        async with app.run_test(size=(130, 40)) as pilot:
            banner = app.query_one(Banner)
            await until(pilot, lambda: "not running" in str(banner.render()),
                        "the no-daemon banner")
            assert banner.display and "aimterm cluster up" in str(banner.render())
            await asyncio.to_thread(up, cluster)
            await until(pilot, lambda: app.connected, "the connection")
            await until(pilot, lambda: [r[3] for r in rows(app)] == ["[bold green]idle[/]"] * 2,
                        "two idle instances")
            assert [r[1] for r in rows(app)] == ["demo-1", "demo-2"]
            assert not banner.display
            await until(pilot, lambda: "demo-agent" in preview(app), "demo-1's screen")

            # An edit outside the working folder: the demo agent asks, and its adapter's
            # answer rule lets only edits inside it through, so demo-1 waits for us.
            await pilot.press("s")  # to the selected instance: demo-1
            await until(pilot, lambda: app.screen.query("#prompt-input"), "the prompt box")
            app.screen.query_one("#prompt-input").value = "edit ../dash-x.txt: hi"  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda: rows(app)[0][:2] == ["[bold magenta]needs an answer (1)[/]",
                                                            "demo-1"], "demo-1 waiting")
            # (The question comes in its own event, just after the state change.)
            await until(pilot, lambda: "Apply edit to ../dash-x.txt?" in str(
                app.query_one(ApprovalPanel).render()), "the question in the approval panel")
            assert "demo-1 asks: " in str(app.query_one(ApprovalPanel).render())
            await until(pilot, lambda: "(y)es/(n)o" in preview(app), "the question on its screen")
            await pilot.press("n")  # reject, through the daemon's answer op
            await until(pilot, lambda: all("idle" in r[3] for r in rows(app)), "demo-1 idle again")
            lines = event_lines(app)
            for change in ("idle → busy", "busy → waiting", "waiting → busy", "busy → idle"):
                assert any("demo-1" in ln and change in ln for ln in lines), change
            assert any("question_answered" in ln and "rule=caller" in ln for ln in lines)
            assert any("turn_finished" in ln and "demo-1" in ln and "status=done" in ln
                       for ln in lines)
            await until(pilot, lambda: "Edit to ../dash-x.txt declined." in preview(app),
                        "the reply on demo-1's screen")
        # (It quit while connected: its stream is cancelled, its socket closed.)

    async def second() -> None:
        # A new dashboard rebuilds the same fleet from the daemon, turn count included.
        jobs = [sys.executable, "-m", "aimterm", "jobs", "run", "-c", str(cluster.config)]
        app = DashboardApp(LiveSource(str(cluster.socket)), retry_s=0.1, jobs_command=jobs)
        async with app.run_test(size=(130, 40)) as pilot:
            await until(pilot, lambda: app.connected and len(rows(app)) == 2, "the fleet")
            assert app.view.instances["demo-1"].turns == 1
            assert any("edit ../dash-x.txt: hi" in ln for ln in event_lines(app))
            # A real job file, run in the daemon from the dashboard (J): the demo agent edits
            # a file, the acceptance command passes, and the run's events arrive.
            work = cluster.root / "work"
            work.mkdir()
            job_file = cluster.root / "jobs.yaml"
            job_file.write_text(f"jobs:\n  - id: hello\n    tool: demo\n    cwd: {work}\n"
                                f"    prompt: 'edit hello.txt: hi'\n"
                                f"    acceptance: ['grep -q hi hello.txt']\n")
            await pilot.press("J")
            await until(pilot, lambda: app.screen.query("#prompt-input"), "the path box")
            app.screen.query_one("#prompt-input").value = str(job_file)  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda: any("1 jobs, in the daemon" in s for s in app.said),
                        "the run handed over")
            await until(pilot, lambda: app.view.metrics.tasks_completed == 1, "the job done",
                        timeout=60)
            assert (work / "hello.txt").read_text().strip() == "hi"
            assert any("task_completed" in ln and "hello" in ln for ln in event_lines(app))
            await asyncio.to_thread(cluster.cli, "cluster", "down")
            banner = app.query_one(Banner)
            # (The banner says it lost the daemon, then, from the next attempt on, that none
            # is running.)
            await until(pilot, lambda: banner.display and not app.connected, "the banner")
            assert rows(app) == []

    asyncio.run(first())
    asyncio.run(second())
