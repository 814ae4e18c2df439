"""The Textual app of ``aimterm dashboard``: the fleet grouped by what it needs, the selected
instance's screen, what it asks, and the event stream.

Everything shown comes from a :class:`~aimterm.dashboard.source.Source`. On every (re)connect
the view is rebuilt from the daemon (its life's events, then its status) and then kept up to
date by the followed event stream alone: nothing is fetched on a timer. The preview is
fetched again when an event of the selected instance arrives (or on ``r``). The once-a-second
tick only redraws the turn times. With no daemon, a banner says so and the app tries again
every ``retry_s`` (a socket cannot tell anyone that a daemon has come back).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import aclosing
from typing import Any

from textual import work
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.widgets import Footer, Header

from aimterm.dashboard.commands import run_command
from aimterm.dashboard.keys import bindings, help_rows
from aimterm.dashboard.logs import LogScreen
from aimterm.dashboard.model import MAX_EVENTS, EventFilter, FleetView, InstanceView
from aimterm.dashboard.plan import PlanView
from aimterm.dashboard.screens import HelpScreen, MetricsScreen, TextPrompt
from aimterm.dashboard.source import Source
from aimterm.dashboard.table import FleetTable
from aimterm.dashboard.widgets import (
    ApprovalPanel,
    Banner,
    EventPanel,
    MetricsBar,
    PlanPanel,
    ScreenPreview,
)
from aimterm.errors import AimtermError
from aimterm.states import State

__all__ = ["DashboardApp"]


#: The most times a second the panels are drawn again for new events: often enough for the
#: eye, and each redraw of a busy fleet's panels costs the dashboard (and the machine) time.
REDRAWS_PER_S = 4
#: The most times a second the selected instance's screen is fetched while it changes.
SCREEN_FETCHES_PER_S = 4


class DashboardApp(App[None]):
    """The dashboard over one :class:`Source`."""

    TITLE = "aimterm dashboard"
    ENABLE_COMMAND_PALETTE = False  # every action has a key, listed by `?`
    CSS = """
    #main { height: 1fr; }
    #left { width: 3fr; }
    FleetTable { height: 1fr; border: round $primary; }
    ApprovalPanel { height: auto; border: round magenta; padding: 0 1; }
    ScreenPreview, PlanPanel { width: 2fr; height: 1fr; border: round $secondary;
                               overflow: hidden; }
    PlanPanel { display: none; }
    EventPanel { height: 12; border: round $primary; }
    Banner { height: auto; padding: 0 1; }
    MetricsBar { height: 1; padding: 0 1; }
    """
    BINDINGS = bindings()

    def __init__(self, source: Source, *, approve: list[str] | None = None,
                 reject: list[str] | None = None, retry_s: float = 1.0,
                 clock: Callable[[], float] = time.time, max_events: int = MAX_EVENTS,
                 tick_s: float | None = 1.0, usage_s: float | None = 2.0,
                 attach_command: list[str] | None = None,
                 jobs_command: list[str] | None = None,
                 run_command: Callable[[list[str]], int] = subprocess.call) -> None:
        super().__init__()
        self.source = source
        self.approve_keys = list(approve or ["y"])
        self.reject_keys = list(reject or ["n"])
        self.retry_s = retry_s
        self.clock = clock
        self.max_events = max_events
        self.tick_s = tick_s
        self.usage_s = usage_s
        #: The command that attaches a terminal to an instance, but for the instance's id.
        self.attach_command = attach_command
        #: ``aimterm jobs run`` for this cluster, but for the file (and ``--detach``).
        self.jobs_command = jobs_command
        self._run_command = run_command
        self.view = FleetView(max_events)
        self.connected = False
        #: Why there is no connection (shown in the banner), None while connected.
        self.offline: str | None = f"connecting to {source.where}…"
        self._tried = False  # no attempt failed yet: the banner does not speak of retrying
        self.selected: str | None = None
        self.filter = EventFilter()
        self.screen_reply: dict[str, Any] | None = None
        self._screen_running = False
        self._screen_again = False
        self._selection_moved = asyncio.Event()  # wakes a screen fetch waiting its turn
        self._redraw_pending = False
        self._last_redraw = 0.0
        self._new_events: list[dict[str, Any]] = []  # for the event panel's next redraw
        #: The plan run shown (with ``p``) instead of the screen, and the run being fetched.
        self.plan: PlanView | None = None
        self.showing_plan = False
        self._plan_fetching: str | None = None
        self._plan_failed: str | None = None  # not asked again on every event
        #: The last messages shown as toasts, newest last.
        self.said: deque[str] = deque(maxlen=20)

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Banner(id="banner")
        yield MetricsBar(id="metrics")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield FleetTable(id="fleet")
                yield ApprovalPanel(id="approval")
            yield ScreenPreview(id="preview")
            yield PlanPanel(id="plan")
        yield EventPanel(id="events", max_lines=1000, markup=False, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(FleetTable).border_title = "fleet"
        self.query_one(EventPanel).border_title = "events"
        self._draw_all()
        self.run_worker(self._connection(), name="connection", exclusive=True)
        if self.tick_s:
            self.set_interval(self.tick_s, self._tick)
        if self.usage_s:
            # CPU and memory are read, not told: no event says them (docs/dashboard.md).
            self.set_interval(self.usage_s, self.sample_usage)

    @work(exclusive=True, group="usage")
    async def sample_usage(self) -> None:
        if not self.connected:
            return
        try:
            reply = await self.source.usage()
        except (AimtermError, OSError):
            return  # (a lost daemon is the connection's to report)
        with _closing_quietly():
            self.view.take_usage(reply)
            self._draw_fleet()

    def _tick(self) -> None:
        """The turn times move on: redraw them (nothing is fetched)."""
        if any(v.turn_started is not None for v in self.view.instances.values()):
            self._draw_fleet()

    # -- the connection ------------------------------------------------------------------------

    async def _connection(self) -> None:
        """Connect, rebuild, follow; on any failure say so, wait, and start again."""
        try:
            with _closing_quietly():
                await self._connect_for_ever()
        finally:
            await self._close_source()  # the app is quitting: no socket is left open

    async def _connect_for_ever(self) -> None:
        while True:
            reason = await self._session()
            await self._close_source()
            self._go_offline(reason)
            await asyncio.sleep(self.retry_s)

    async def _session(self) -> str:
        """One connection: rebuild everything from the daemon, then follow its events.
        Returns why it ended."""
        try:
            snap = await self.source.connect()
        except (AimtermError, OSError) as exc:
            return str(exc)
        self.view = FleetView.build(snap.status, snap.history, self.max_events)
        self.connected, self.offline = True, None
        if self.selected not in self.view.instances:
            ordered = self.view.ordered()
            self.selected = ordered[0].id if ordered else None
        self.plan = None
        self._draw_all()
        self._want_screen()
        if self.showing_plan:
            self._want_plan()
        lost = f"lost the daemon at {self.source.where}"
        try:
            async with aclosing(self.source.follow(snap.since)) as events:
                async for event in events:
                    self._take(event)
        except (AimtermError, OSError) as exc:
            return f"{lost}: {exc}"
        return f"{lost}: it stopped"

    async def _close_source(self) -> None:
        try:
            await self.source.close()
        except (AimtermError, OSError):
            pass

    def _go_offline(self, reason: str) -> None:
        # Nothing of the last daemon is kept: what is shown would be stale.
        self.connected, self.offline, self._tried = False, reason, True
        self.view = FleetView(self.max_events)
        self.screen_reply = None
        self.plan = None
        self._draw_all()

    def _take(self, event: dict[str, Any]) -> None:
        if not self.view.apply(event):
            return
        if self.filter.matches(event, self.view.tool_of(event)):
            self._new_events.append(event)
        if self.selected not in self.view.instances:
            ordered = self.view.ordered()
            self.selected = ordered[0].id if ordered else None
            self._want_screen()
        elif event.get("instance") == self.selected:
            self._want_screen()
        if isinstance(self.screen, LogScreen) and event.get("instance") == self.screen.instance:
            self.screen.instance_moved()
        if self.showing_plan:
            newest = self.view.plan_runs[-1] if self.view.plan_runs else None
            if self.plan is None or newest != self.plan.run_id:
                self._want_plan()
            elif self.plan.apply(event):
                self.query_one(PlanPanel).show(self.plan)
        if not self._redraw_pending:
            # Events are drawn together, at most REDRAWS_PER_S times a second: a busy fleet
            # sends thousands a second, and a person reads none of them one by one.
            self._redraw_pending = True
            wait = self._last_redraw + 1.0 / REDRAWS_PER_S - time.monotonic()
            if wait > 0:
                self.set_timer(wait, self._redraw)
            else:
                self.call_later(self._redraw)

    def _redraw(self) -> None:
        self._redraw_pending = False
        self._last_redraw = time.monotonic()
        with _closing_quietly():
            self._redraw_now()

    def _redraw_now(self) -> None:
        events, self._new_events = self._new_events, []
        if events:
            self.query_one(EventPanel).add_many(events)
        self._draw_fleet()
        self._draw_approval()
        self.query_one(MetricsBar).show(self.view if self.connected else None)

    # -- drawing -------------------------------------------------------------------------------

    def _draw_all(self) -> None:
        self.query_one(Banner).show(None if self.connected else self._banner_text())
        self.query_one(MetricsBar).show(self.view if self.connected else None)
        self._draw_fleet()
        self._draw_approval()
        self._draw_preview()
        self._new_events = []  # (the replay has them)
        self.query_one(EventPanel).replay(self.view, self.filter)
        self.sub_title = self.source.where

    def _banner_text(self) -> str:
        if not self._tried:
            return str(self.offline)
        return f"{self.offline} — reconnecting every {self.retry_s:g}s"

    def _draw_fleet(self) -> None:
        table = self.query_one(FleetTable)
        table.show(self.view, self.clock(), self.selected)
        counts = self.view.counts()
        summary = ", ".join(f"{n} {g.value}" for g, n in counts.items() if n)
        table.border_title = f"fleet · {summary}" if summary else "fleet"

    def _draw_approval(self) -> None:
        waiting = [v.id for v in self.view.ordered() if v.state is State.WAITING]
        self.query_one(ApprovalPanel).show(self._selected_view(), waiting, self.approve_keys,
                                           self.reject_keys)

    def _draw_preview(self) -> None:
        preview = self.query_one(ScreenPreview)
        if self.selected is None or not self.connected:
            preview.show(None, None)
        elif self.screen_reply is None or self.screen_reply.get("id") != self.selected:
            # Named at once, with the state the events gave it; the screen is on its way.
            view = self._selected_view()
            preview.show(self.selected, None, note="loading…",
                         state=view.state.value if view is not None else None)
        else:
            preview.show(self.selected, self.screen_reply)

    def _selected_view(self) -> InstanceView | None:
        return self.view.instances.get(self.selected) if self.selected else None

    # -- the preview ---------------------------------------------------------------------------

    def _want_screen(self) -> None:
        """Fetch the selected screen; requests made during a fetch become one more fetch."""
        if self._screen_running:
            self._screen_again = True
            return
        self._screen_running = True
        self.run_worker(self._fetch_screens(), group="screen")

    async def _fetch_screens(self) -> None:
        try:
            with _closing_quietly():
                await self._fetch_screens_now()
        finally:
            self._screen_running = False

    async def _fetch_screens_now(self) -> None:
        while True:
            self._screen_again = False
            iid = self.selected
            if iid is not None and self.connected:
                try:
                    self.screen_reply = await self.source.screen(iid)
                except (AimtermError, OSError) as exc:
                    self.screen_reply = None
                    if self.connected:  # else the banner says it all
                        self.query_one(ScreenPreview).show(iid, None, note=f"no screen: {exc}")
                else:
                    self._draw_preview()
            else:
                self._draw_preview()
            if not self._screen_again:
                return
            if self.selected == iid:
                # The same instance drew more: its screen again in a moment, not at once (a
                # busy tool changes it faster than the daemon can be asked). Another
                # instance chosen meanwhile is fetched straight away.
                self._selection_moved.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._selection_moved.wait(),
                                           1.0 / SCREEN_FETCHES_PER_S)

    # -- actions -------------------------------------------------------------------------------

    def say(self, message: str, severity: SeverityLevel = "information") -> None:
        """A toast; kept in :attr:`said` too. No markup: errors quote ``[...]`` freely."""
        self.said.append(message)
        self.notify(message, severity=severity, markup=False)

    def _move_to(self, iid: str | None) -> None:
        if iid is None or iid == self.selected:
            return
        self.selected = iid
        self._selection_moved.set()
        self.query_one(FleetTable).select(iid)
        self._draw_approval()
        self._draw_preview()
        self._want_screen()

    def action_select(self, step: int) -> None:
        # The rows as they stand: they may wait a moment to be put in order again.
        ordered = self.query_one(FleetTable).order or [v.id for v in self.view.ordered()]
        if not ordered:
            return
        at = ordered.index(self.selected) if self.selected in ordered else -step
        self._move_to(ordered[max(0, min(len(ordered) - 1, at + step))])

    def on_fleet_table_picked(self, message: FleetTable.Picked) -> None:
        self._move_to(message.instance)

    def on_fleet_table_reorder(self, _message: FleetTable.Reorder) -> None:
        self._draw_fleet()

    def action_next_waiting(self) -> None:
        waiting = [v.id for v in self.view.ordered() if v.state is State.WAITING]
        if not waiting:
            self.say("no instance is waiting for an answer")
            return
        later = [w for w in waiting if self.selected is None or w > self.selected]
        self._move_to((later or waiting)[0])

    def _waiting_selected(self) -> str | None:
        inst = self._selected_view()
        if inst is None or inst.state is not State.WAITING:
            self.say("the selected instance is not waiting for an answer", severity="warning")
            return None
        return inst.id

    def action_approve(self) -> None:
        iid = self._waiting_selected()
        if iid is not None:
            self._answer(iid, self.approve_keys, "approved")

    def action_reject(self) -> None:
        iid = self._waiting_selected()
        if iid is not None:
            self._answer(iid, self.reject_keys, "rejected")

    def action_type_answer(self) -> None:
        iid = self._waiting_selected()
        if iid is None:
            return
        question = (self._selected_view() or InstanceView(iid, "?")).question or ""

        def done(text: str | None) -> None:
            if text:
                self._answer(iid, [text, "enter"], "answered")

        self.push_screen(TextPrompt(f"answer {iid}: {question}", "text, sent then Enter"),
                         done)

    def _answer(self, iid: str, keys: list[str], what: str) -> None:
        async def go() -> None:
            try:
                await self.source.answer(iid, keys)
            except (AimtermError, OSError) as exc:
                self.say(f"{iid}: {exc}", severity="error")
            else:
                self.say(f"{what} {iid}")

        self.run_worker(go(), group="requests")

    def action_send_instance(self) -> None:
        if self.selected is None:
            self.say("no instance selected", severity="warning")
            return
        self._ask_prompt(self.selected)

    def action_send_fleet(self) -> None:
        self._ask_prompt(None)

    def _ask_prompt(self, to: str | None) -> None:
        def done(text: str | None) -> None:
            if text:
                self._send(text, to)

        where = to if to is not None else "the fleet"
        self.push_screen(TextPrompt(f"send a prompt to {where}", "the prompt"), done)

    def _send(self, prompt: str, to: str | None) -> None:
        async def go() -> None:
            try:
                reply = await self.source.send(prompt, to=to)
            except (AimtermError, OSError) as exc:
                self.say(str(exc), severity="error")
            else:
                self.say(f"queued (request {reply.get('queued')}) for "
                            f"{to or 'the fleet'}")

        self.run_worker(go(), group="requests")

    def action_run_jobs(self) -> None:
        if self.jobs_command is None:
            self.say("starting jobs needs the jobs command (aimterm dashboard sets it)",
                     severity="warning")
            return

        def done(path: str | None) -> None:
            if path:
                self.run_worker(self._run_jobs(os.path.abspath(os.path.expanduser(path))),
                                group="requests")

        self.push_screen(TextPrompt("run a job file in the daemon",
                                    "path of a job file (YAML or JSON)"), done)

    async def _run_jobs(self, path: str) -> None:
        assert self.jobs_command is not None
        got = await run_command([*self.jobs_command, path, "--detach"])
        # Its events (run_started, task_*) come through the stream like any other's.
        self.say(got.line or f"exit status {got.code}",
                 severity="information" if got.ok else "error")

    def action_edit_filter(self) -> None:
        def done(text: str | None) -> None:
            if text is None:
                return
            try:
                self._set_filter(EventFilter.parse(text))
            except ValueError as exc:
                self.say(str(exc), severity="error")

        self.push_screen(TextPrompt("filter the events", "instance:ID tool:T run:R kind:K",
                                    self.filter.describe()), done)

    def action_filter_instance(self) -> None:
        if self.filter.instance is not None or self.selected is None:
            self._set_filter(EventFilter(tool=self.filter.tool, run=self.filter.run,
                                         kinds=self.filter.kinds))
        else:
            self._set_filter(EventFilter(instance=self.selected, tool=self.filter.tool,
                                         run=self.filter.run, kinds=self.filter.kinds))

    def action_clear_filter(self) -> None:
        self._set_filter(EventFilter())

    def _set_filter(self, flt: EventFilter) -> None:
        self.filter = flt
        self._new_events = []  # (the replay has them)
        self.query_one(EventPanel).replay(self.view, flt)

    def action_refresh_screen(self) -> None:
        self._want_screen()

    def action_toggle_plan(self) -> None:
        self.showing_plan = not self.showing_plan
        self.query_one(ScreenPreview).display = not self.showing_plan
        self.query_one(PlanPanel).display = self.showing_plan
        self.plan, self._plan_failed = None, None  # fetched afresh: no copy is trusted
        if self.showing_plan:
            self._want_plan()
        else:
            self._want_screen()

    def _want_plan(self) -> None:
        """Fetch the newest plan run (its graph is not in the events); its events then keep
        it current. Events that come while it is fetched are in the reply already."""
        panel = self.query_one(PlanPanel)
        run = self.view.plan_runs[-1] if self.view.plan_runs else None
        if run is None or not self.connected:
            self.plan = None
            panel.show(None, "no plan run in this daemon's life yet (aimterm run PLAN starts one)"
                       if self.connected else "")
            return
        if self.plan is not None and self.plan.run_id == run:
            panel.show(self.plan)
            return
        if run in (self._plan_fetching, self._plan_failed):
            return
        self._plan_fetching = run

        async def fetch() -> None:
            try:
                reply = await self.source.plan(run)
            except (AimtermError, OSError) as exc:
                self.plan, self._plan_failed = None, run
                panel.show(None, f"plan run {run}: {exc}")
            else:
                self.plan = PlanView.from_reply(reply)
                panel.show(self.plan)
            finally:
                self._plan_fetching = None

        self.run_worker(fetch(), group="plan")

    def action_take_over(self) -> None:
        if self.selected is None or self.attach_command is None:
            self.say("nothing to take over" if self.attach_command else
                     "taking over needs the attach command (aimterm dashboard sets it)",
                     severity="warning")
            return
        argv = [*self.attach_command, self.selected]
        try:
            # The terminal goes to `aimterm attach` until it detaches; the loop waits, and
            # the events that came meanwhile are read after.
            with self.suspend():
                code = self._run_command(argv)
        except SuspendNotSupported:
            self.say("this terminal cannot be handed over; run: " + " ".join(argv),
                     severity="error")
            return
        except OSError as exc:
            self.say(f"cannot run {argv[0]}: {exc}", severity="error")
            return
        self.say(f"gave {self.selected} back" if code == 0 else
                 f"aimterm attach {self.selected} exited with status {code}",
                 severity="information" if code == 0 else "error")
        self._want_screen()

    def action_help(self) -> None:
        # Built once and kept: composing and styling it anew on each `?` was most of the
        # time the key took while the fleet was busy.
        if not self.is_screen_installed("help"):
            self.install_screen(HelpScreen(help_rows()), name="help")
        self.push_screen("help")

    def action_metrics(self) -> None:
        self.push_screen(MetricsScreen(lambda: self.view.metrics, self.clock))

    def action_logs(self) -> None:
        if self.selected is None:
            self.say("no instance to show the log of", severity="warning")
            return
        self.push_screen(LogScreen(self.source, self.selected, clock=self.clock))


@contextlib.contextmanager
def _closing_quietly() -> Iterator[None]:
    """For a worker that draws when its await returns: the app's own screen holds every
    panel while the app lives (app queries go to it, whatever screen is on top), so a panel
    not found means the app is closing under the worker — it ends, quietly."""
    try:
        yield
    except NoMatches:
        return
