"""The real Gemini CLI under aimterm, pointed at the fake model server (127.0.0.1 only).

Skipped when the CLI is not installed (``scripts/install-agent-clis``). Each instance gets a
throwaway HOME whose ``~/.gemini`` holds the offline configuration: API-key auth pre-selected,
the working folder pre-trusted, auto-update, usage statistics and telemetry off. That
configuration lives in ``aimterm.testing.offline`` (the plugin's ``aimterm_offline_env``), not
in the adapter, which takes whatever the user has set up.

Run with ``-s`` to see the timings (time to IDLE per instance, turn overhead beyond the fake
model's think delay).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.spec import AdapterSpec
from aimterm.events import Event, QuestionAnswered, QuestionPending, StateChanged
from aimterm.pool import GroupSpec, InstanceSetup, Pool
from aimterm.session import Session, TurnStatus
from aimterm.testing import FakeModel, ToolCall
from aimterm.testing.clis import find_cli
from aimterm.testing.plugin import OfflineEnv
from tests.helpers import extended_adapter

pytestmark = pytest.mark.skipif(
    find_cli("gemini") is None,
    reason="the Gemini CLI is not installed (scripts/install-agent-clis installs it)")

THINK_S = 0.3
# Plain words only: Gemini renders the model's text as markdown, so the fake replies
# ("FAKE-REPLY <sha1>: <prompt>") must not contain *, _, `, # or list markers to come back
# character for character.
PROMPTS = [f"tell me one fact about topic {name}" for name in (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")]
EDIT_PROMPT = "please create notes.txt with a greeting"
EDIT_CONTENT = "hello from the fake model\n"
SHELL_PROMPT = "please run the toucher command"
SHELL_COMMAND = "touch shell_ran.txt"  # not read-only: Gemini asks before running it (ls would not)

# The built-in adapter approves nothing; this fleet approves edits inside the working tree.
# The approval box's header line is "│ ? WriteFile  Writing to <path>" (or "│ ? Edit  <path>: …")
# with the path relative to the workspace; "1" picks "Allow once".
FLEET_ADAPTER = r"""
name: gemini-fleet
extends: gemini
answers:
  - name: edit-in-tree
    match: '(?s)^│ \? (?:WriteFile|Edit)\s+(?:Writing to )?(?P<file>[^\s:│]+).*?Apply this change\?'
    when: {file: '^(?!/)(?!\.\./)(?!\.\.$)'}
    send: "1"
"""


pytestmark = [pytestmark, pytest.mark.aimterm_fake_model(
    think_s=THINK_S, prompts=PROMPTS + [EDIT_PROMPT, SHELL_PROMPT],
    tool_calls={"create notes.txt": ToolCall(kind="edit", path="notes.txt", content=EDIT_CONTENT),
                "run the toucher": ToolCall(kind="shell", command=SHELL_COMMAND)})]


def fleet_adapter(tmp_path: Path) -> AdapterSpec:
    return extended_adapter(FLEET_ADAPTER, str(tmp_path / "gemini-fleet.yaml"))


def test_pool_of_three(aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv,
                       tmp_path: Path) -> None:
    fake = aimterm_fake_model

    def setup(iid: str, index: int) -> InstanceSetup:
        root = tmp_path / iid
        cwd = root / "work"
        cwd.mkdir(parents=True)
        # API-key auth pre-selected and the working folder pre-trusted: no start-up dialog.
        env = aimterm_offline_env("gemini", root / "home", trust=[cwd])
        return InstanceSetup(cwd=str(cwd), env=env)

    spec = fleet_adapter(tmp_path)
    pool = Pool([GroupSpec(spec, count=3, setup=setup)])
    events: list[Event] = []
    pool.bus.subscribe(events.append)
    stops: dict[str, str] = {}
    try:
        started = time.monotonic()
        pool.start(timeout=90)
        ready = {e.instance: e.mono - started for e in events
                 if isinstance(e, StateChanged) and e.old == "starting" and e.new == "idle"}
        assert sorted(ready) == ["gemini-fleet-1", "gemini-fleet-2", "gemini-fleet-3"]
        for iid, secs in sorted(ready.items()):
            print(f"\n{iid}: IDLE {secs:.2f} s after start")

        # (a) ten prompts routed over the fleet: every reply back, none lost.
        futures = {p: pool.submit(p) for p in PROMPTS}
        try:
            turns = {p: f.result(60) for p, f in futures.items()}
        except Exception:
            for inst in pool.instances():
                print(inst.id, inst.state, inst.pending and inst.pending.prompt)
                print("\n".join(inst.session.terminal.tail(20)))
            for e in events:
                print(e)
            raise
        overheads = []
        for prompt, turn in turns.items():
            assert turn.status is TurnStatus.DONE, (prompt, turn.error)
            assert turn.reply == fake.expected_reply(prompt), turn.reply
            calls = [r for r in fake.requests if r.prompt == prompt and r.answer_kind]
            think = THINK_S * len(calls)
            overheads.append((turn.total_ms or 0) / 1000 - think)
            print(f"{turn.instance}: {prompt!r}: {turn.total_ms:.0f} ms "
                  f"({len(calls)} model calls, {think:.1f} s thinking), "
                  f"submit->busy {turn.submit_to_busy_ms:.0f} ms, {turn.retries} re-sends")
        assert len({t.instance for t in turns.values()}) == 3
        print(f"turn overhead beyond think delay: min {min(overheads) * 1000:.0f} ms, "
              f"mean {sum(overheads) / len(overheads) * 1000:.0f} ms, "
              f"max {max(overheads) * 1000:.0f} ms")

        # (b) a file edit: the fleet's rule approves it, the file is really written.
        turn = pool.submit(EDIT_PROMPT).result(60)
        assert turn.status is TurnStatus.DONE, turn.error
        assert [a.rule for a in turn.answered] == ["edit-in-tree"]
        assert "notes.txt" in turn.answered[0].question
        written = Path(pool.instance(turn.instance).cwd or "") / "notes.txt"
        assert written.read_text() == EDIT_CONTENT
        print(f"edit turn reply: {turn.reply!r}")
        assert turn.reply == fake.expected_reply(EDIT_PROMPT)
        edits = [r for r in fake.requests if r.prompt == EDIT_PROMPT and r.tool_name]
        assert [r.tool_name for r in edits] == ["write_file"]

        # (c) a shell command: no rule answers it, so the instance waits for a person.
        mark = len(events)
        future = pool.submit(SHELL_PROMPT)
        deadline = time.monotonic() + 30
        pending: list[QuestionPending] = []
        while not pending and time.monotonic() < deadline:
            time.sleep(0.05)
            pending = [e for e in events[mark:] if isinstance(e, QuestionPending)]
        assert pending, "no QuestionPending for the shell command"
        question = pending[0]
        assert SHELL_COMMAND in question.question and question.rule == "tool-confirm"
        inst = pool.instance(question.instance)
        assert inst.state.value == "waiting" and not future.done()
        ran = Path(inst.cwd or "") / "shell_ran.txt"
        assert not ran.exists()
        pool.answer(question.instance, "1")  # "1. Allow once"
        turn = future.result(60)
        assert turn.status is TurnStatus.DONE, turn.error
        assert ran.exists()
        assert [a.rule for a in turn.answered] == ["caller"]
        print(f"shell turn reply: {turn.reply!r}")
        assert turn.reply == fake.expected_reply(SHELL_PROMPT)
        assert not [e for e in events if isinstance(e, QuestionAnswered) and e.rule != "caller"
                    and SHELL_COMMAND in e.question]
    finally:
        # (d) shutdown: every instance quits through its exit keys (/quit), exit code 0.
        instances = pool.instances()
        pids = [i.session.pid for i in instances if i.session.pid]
        for inst in instances:
            original = inst.session.stop

            def stop(*args: object, _orig=original, _iid=inst.id, **kw: object) -> str:
                stops[_iid] = _orig(*args, **kw)  # type: ignore[arg-type]
                return stops[_iid]

            inst.session.stop = stop  # type: ignore[method-assign]
        began = time.monotonic()
        pool.shutdown()
        print(f"shutdown of {len(instances)} instances: {time.monotonic() - began:.2f} s")
    assert stops == {i.id: "keys" for i in instances}, stops
    for inst in instances:
        assert inst.session.exit_code == 0 and inst.session.exit_signal is None
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_first_run_dialogs(aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv,
                           tmp_path: Path) -> None:
    """A fresh HOME with only the offline switches: trust folder (Gemini restarts itself),
    auth method and the pre-filled key box are all answered by the built-in start-up rules."""
    fake = aimterm_fake_model
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = aimterm_offline_env("gemini", tmp_path / "home", select_auth=False)
    conf = Path(env["HOME"]) / ".gemini"
    session = Session(load_adapter("gemini"), cwd=cwd, env=env)
    answered: list[str] = []
    session.subscribe(lambda e: answered.append(e.rule)
                      if isinstance(e, QuestionAnswered) else None)
    started = time.monotonic()
    try:
        session.start(timeout=60)
        print(f"\nfirst run: IDLE {time.monotonic() - started:.2f} s after start "
              f"(dialogs {answered})")
        assert session.state.value == "idle"
        # Each dialog is answered once: the trust dialog, answered by the process that then
        # restarted, stays on screen above the new one's UI but no longer counts.
        assert answered == ["trust-folder", "auth-method", "api-key"]
        turn = session.send(PROMPTS[0], timeout=30)
        assert turn.status is TurnStatus.DONE, turn.error
        assert turn.reply == fake.expected_reply(PROMPTS[0])
    finally:
        # (Outside the try's assertions: a failed start-up has already stopped the session,
        # and its error must not be hidden behind this one.)
        how = session.stop()
    assert how == "keys"
    assert session.exit_code == 0
    assert json.loads((conf / "trustedFolders.json").read_text()) == {str(cwd): "TRUST_FOLDER"}
    assert os.path.exists(conf / "settings.json")
