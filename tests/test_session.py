"""Session behaviour against real programs under real PTYs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from aimterm.errors import (
    NotReady,
    SessionExited,
    SpawnError,
    StartupTimeout,
    SubmitFailed,
    TurnTimeout,
)
from aimterm.events import QuestionAnswered, QuestionPending, StateChanged
from aimterm.session import Session, TurnStatus
from aimterm.states import State
from tests.helpers import CONFIRM, ECHO, SPINNER, fake_adapter, wait_for


def edges(session: Session) -> list[tuple[str, str]]:
    return [(e.old, e.new) for e in session.events() if isinstance(e, StateChanged)]


def test_line_tool_turns_and_reply_without_echo_or_prompt() -> None:
    with Session(fake_adapter(ECHO)) as s:
        assert s.state is State.IDLE
        for i in range(5):
            turn = s.send(f"ping {i}")
            assert turn.status is TurnStatus.DONE
            assert turn.reply == f"echo: ping {i}"
            assert turn.submit_to_busy_ms is not None and turn.busy_to_idle_ms is not None
        assert s.turns_done == 5
    assert s.state is State.EXITED
    assert ("starting", "idle") in edges(s)
    assert ("idle", "busy") in edges(s) and ("busy", "idle") in edges(s)
    assert edges(s)[-2:] == [("idle", "stopping"), ("stopping", "exited")]


def test_screen_tool_busy_from_screen_and_title_then_idle_after_settle() -> None:
    spec = fake_adapter(SPINNER)
    with Session(spec, env={"FAKE_THINK": "0.4"}) as s:
        seen: list[StateChanged] = []
        s.subscribe(lambda e: seen.append(e) if isinstance(e, StateChanged) else None)
        turn = s.send("hello")
        assert turn.status is TurnStatus.DONE
        assert turn.reply == "result: hello"
        assert turn.submit_to_busy_ms is not None and turn.submit_to_busy_ms < 2000
        # Busy lasted about the think time; idle only came after the settle time.
        assert turn.busy_to_idle_ms is not None and turn.busy_to_idle_ms >= 300
        assert turn.idle_at is not None and turn.last_output_at is not None
        assert turn.idle_at - turn.last_output_at >= spec.settle_ms / 1000 - 0.005
        idle = [e for e in seen if e.new == "idle"]
        assert idle and idle[-1].rule == "prompt"


def test_settle_prevents_false_idle_mid_turn(tmp_path: Path) -> None:
    # The tool draws an idle-looking prompt mid-turn, pauses, then finishes the turn.
    script = tmp_path / "tool.sh"
    script.write_text('printf "> "; while IFS= read -r line; do printf "> "; sleep 0.3; '
                      'printf "\\rdone %s\\n> " "$line"; done\n')
    text = """
command: [bash, --norc, --noprofile, "%s"]
detect: stream
states:
  - {state: idle, region: bottom:1, any: ['^>$']}
settle_ms: %d
submit: {keys: [enter], verify: output}
reply: {from: stream, strip: [echo, prompt]}
"""
    # With no settle time the mid-turn prompt ends the turn early ...
    with Session(fake_adapter(text % (script, 0))) as s:
        assert s.send("x").reply == ""
    # ... with a settle time longer than the pause it does not.
    with Session(fake_adapter(text % (script, 500))) as s:
        turn = s.send("y")
        assert turn.reply == "done y"
        assert turn.busy_to_idle_ms is not None and turn.busy_to_idle_ms >= 700


def test_question_answered_by_rule_with_group_condition() -> None:
    with Session(fake_adapter(CONFIRM)) as s:
        turn = s.send("do safe-thing")
        assert turn.status is TurnStatus.DONE
        assert turn.reply.endswith("did safe-thing")
        assert [a.rule for a in turn.answered] == ["safe"]
        assert ("busy", "waiting") not in edges(s)


def test_question_no_rule_answers_puts_session_waiting_then_api_answer() -> None:
    with Session(fake_adapter(CONFIRM)) as s:
        pending: list[QuestionPending] = []
        s.subscribe(lambda e: pending.append(e) if isinstance(e, QuestionPending) else None)
        turn = s.send("do risky")
        assert turn.status is TurnStatus.WAITING
        assert turn.question == "Proceed with risky? (y/n)"
        assert s.state is State.WAITING and s.question == turn.question
        assert pending and pending[0].question == turn.question
        with pytest.raises(NotReady):
            s.send("do other")
        s.answer(["n", "enter"])
        turn = s.wait_turn(timeout=10)
        assert turn.status is TurnStatus.DONE
        assert turn.reply.endswith("skipped risky")
        assert ("busy", "waiting") in edges(s) and ("waiting", "busy") in edges(s)
        assert any(isinstance(a, QuestionAnswered) and a.rule == "caller" for a in turn.answered)


def test_startup_dialog_answered_and_cursor_query_answered() -> None:
    spec = fake_adapter("""
command: ["{py}", "{fakes}/cursor_query.py"]
detect: screen
states:
  - {state: idle, region: cursor, any: ['^\\$ ?$']}
settle_ms: 50
reply: {from: screen-delta, strip: [echo, prompt]}
exit: {keys: [quit, enter], timeout_s: 3}
""")
    with Session(spec) as s:
        assert "cursor at 1;1" in s.screen_text()
        turn = s.send("hi")
        assert turn.reply == "ok: hi"


def test_crash_on_start_is_an_error_with_the_screen() -> None:
    spec = fake_adapter("""
command: ["{py}", "{fakes}/crash_on_start.py"]
states: [{state: idle, any: ['^> $']}]
""")
    s = Session(spec)
    with pytest.raises(SessionExited) as info:
        s.start()
    assert "exit code 3" in str(info.value)
    assert any("config file is corrupt" in line for line in info.value.screen_tail)
    assert s.state is State.EXITED
    assert edges(s) == [("exited", "starting"), ("starting", "exited")]


def test_missing_command_is_a_spawn_error_naming_it() -> None:
    spec = fake_adapter("""
command: [definitely-not-a-command-xyz]
states: [{state: idle, any: ['^> $']}]
""")
    with pytest.raises(SpawnError) as info:
        Session(spec).start()
    assert "definitely-not-a-command-xyz" in str(info.value)
    assert "not found" in str(info.value)


def test_startup_timeout_carries_context_and_leaves_no_process() -> None:
    spec = fake_adapter("""
command: ["{py}", "{fakes}/echo_repl.py"]
detect: stream
states: [{state: idle, any: ['^never-shown$']}]
startup: {timeout_s: 0.5}
""")
    s = Session(spec, instance_id="slowpoke")
    with pytest.raises(StartupTimeout) as info:
        s.start()
    err = info.value
    assert err.instance == "slowpoke" and err.adapter == "fake" and err.state == "starting"
    assert any("ready>" in line for line in err.screen_tail)
    assert s.state is State.EXITED


def test_turn_timeout_then_interrupt() -> None:
    with Session(fake_adapter(SPINNER), env={"FAKE_THINK": "30"}) as s:
        with pytest.raises(TurnTimeout) as info:
            s.send("long", timeout=0.8)
        assert info.value.state == "busy"
        assert any("esc to interrupt" in line for line in info.value.screen_tail)
        s.interrupt()
        turn = s.wait_turn(timeout=10)
        assert turn.status is TurnStatus.INTERRUPTED
        assert "interrupted" in turn.reply
        assert s.state is State.IDLE


def test_process_killed_mid_turn_fails_the_turn() -> None:
    s = Session(fake_adapter(SPINNER), env={"FAKE_THINK": "30"})
    s.start()
    try:
        run = s._begin("work")
        s.wait_state(State.BUSY)
        wait_for(lambda: run.turn.busy_at is not None, "busy on screen")
        assert s.pid is not None
        os.kill(s.pid, 9)
        with pytest.raises(SessionExited) as info:
            s._await_turn(run, 10)
        assert "signal 9" in str(info.value)
        assert s.state is State.EXITED
        assert ("busy", "exited") in edges(s)
    finally:
        s.stop()


def test_stop_escalates_and_kills_the_group() -> None:
    spec = fake_adapter("""
command: ["{py}", "{fakes}/slow_exit.py"]
detect: stream
states: [{state: idle, region: bottom:1, any: ['^slow>$']}]
settle_ms: 0
exit: {keys: [quit, enter], timeout_s: 0.3, signal_grace_s: 0.3}
""")
    s = Session(spec)
    s.start()
    text = s.screen_text()
    grandchild = int(text.split("grandchild ")[1].split()[0])
    how = s.stop()
    assert how == "sigkill"
    assert s.state is State.EXITED
    import psutil

    assert not psutil.pid_exists(grandchild) or \
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_restart_after_exit_and_attach_detach_edges() -> None:
    s = Session(fake_adapter(ECHO))
    s.start()
    try:
        s.attach()
        assert s.state is State.ATTACHED
        with pytest.raises(NotReady):
            s.send("no")
        assert s.detach() is State.IDLE
        s.stop()
        assert s.restart() is State.IDLE
        assert s.starts == 2
        assert s.send("again").reply == "echo: again"
        assert ("idle", "attached") in edges(s) and ("attached", "idle") in edges(s)
        assert ("exited", "starting") in edges(s)
    finally:
        s.stop()


def test_bash_and_python_builtin_adapters() -> None:
    with Session("bash") as s:
        assert s.send("echo $((6*7))").reply == "42"
        assert s.send("printf 'a\\nb\\n'").reply == "a\nb"
    with Session("python") as s:
        assert s.send("print(6*7)").reply == "42"
        assert s.send("x = 5").reply == ""
        assert s.send("x + 1").reply == "6"


def test_demo_agent_turn_edit_and_waiting(tmp_path: Path) -> None:
    env = {"AIMTERM_DEMO_THINK": "0.1", "AIMTERM_DEMO_HOME": str(tmp_path / "home")}
    work = tmp_path / "work"
    work.mkdir()
    with Session("demo", cwd=work, env=env) as s:
        answered = [e for e in s.events() if isinstance(e, QuestionAnswered)]
        assert [a.rule for a in answered] == ["trust-folder"]
        turn = s.send("hello there")
        assert turn.reply == "Echo: hello there"
        assert turn.metrics["tokens"] == {"sent": "2", "received": "3"}
        turn = s.send("edit src/a.txt: alpha")
        assert turn.reply == "Wrote 6 bytes to src/a.txt"
        assert (work / "src" / "a.txt").read_text() == "alpha\n"
        turn = s.send("edit ../outside.txt: beta")
        assert turn.status is TurnStatus.WAITING
        assert "Apply edit to ../outside.txt?" in (turn.question or "")
        s.answer("n")
        assert s.wait_turn(timeout=10).reply == "Edit to ../outside.txt declined."
        assert not (tmp_path / "outside.txt").exists()


def test_the_same_question_in_the_next_turn_is_answered_at_once(tmp_path: Path) -> None:
    """A question answered in one turn and asked again in the next (the same file edited
    by two jobs on one instance) is a new question, answered right away — not held back as
    a redraw of the old one until ANSWER_RETRY_S has passed."""
    from aimterm.adapter.answers import ANSWER_RETRY_S

    env = {"AIMTERM_DEMO_THINK": "0.05", "AIMTERM_DEMO_HOME": str(tmp_path / "home")}
    with Session("demo", cwd=tmp_path, env=env) as s:
        first = s.send("edit a.txt: one")
        second = s.send("edit a.txt: two")
        assert [a.rule for a in first.answered] == [a.rule for a in second.answered] == [
            "edit-in-tree"]
        assert (tmp_path / "a.txt").read_text() == "two\n"
        assert second.total_ms is not None and second.total_ms < ANSWER_RETRY_S * 1000 * 0.8


def test_a_turn_too_quick_to_show_busy_ends_well_before_the_verify_timeout(
        tmp_path: Path) -> None:
    """With no think time the demo agent answers before a busy frame is seen: the idle
    screen brings the verify timer forward, so the turn does not wait verify_timeout_ms."""
    env = {"AIMTERM_DEMO_THINK": "0", "AIMTERM_DEMO_HOME": str(tmp_path / "home")}
    with Session("demo", cwd=tmp_path, env=env) as s:
        timeout_ms = s.spec.submit.verify_timeout_ms
        for i in range(3):
            turn = s.send(f"hello {i}")
            assert turn.total_ms is not None and turn.total_ms < timeout_ms * 0.8, turn
            assert turn.reply.strip(), turn  # it answered, and the answer was read


def test_transcript_is_written(tmp_path: Path) -> None:
    cast = tmp_path / "s.cast"
    with Session(fake_adapter(ECHO), transcript=cast) as s:
        s.send("rec")
    from aimterm.term.transcript import read_recording

    rec = read_recording(cast)
    out = "".join(d for _, code, d in rec.events if code == "o")
    typed = "".join(d for _, code, d in rec.events if code == "i")
    assert "echo: rec" in out and "rec\r" in typed


def test_send_before_start_is_not_ready() -> None:
    with pytest.raises(NotReady):
        Session(fake_adapter(ECHO)).send("x")


def test_python_executable_is_used_for_python_adapter() -> None:
    s = Session("python")
    assert s.command()[0] == sys.executable


def test_long_prompt_and_reply_wrapped_by_the_screen_come_back_whole(tmp_path: Path) -> None:
    env = {"AIMTERM_DEMO_THINK": "0.05", "AIMTERM_DEMO_HOME": str(tmp_path / "home")}
    prompt = "please " + " ".join(f"word{i}" for i in range(30))  # wider than 120 columns
    assert len(prompt) > 150
    with Session("demo", cwd=tmp_path, env=env) as s:
        assert s.send(prompt).reply == f"Echo: {prompt}"


def test_answer_delay_holds_answers_back_until_the_question_has_been_up() -> None:
    spec = fake_adapter(CONFIRM.replace("exit: {keys: [quit, enter], timeout_s: 3}",
                                        "exit: {keys: [quit, enter], timeout_s: 3}\n"
                                        "answer_delay_ms: 400"))
    with Session(spec) as s:
        typed: list[float] = []
        s.terminal.add_output_listener(lambda data, at: typed.append(at) if b"did safe" in data
                                       else None)
        turn = s.send("do safe-x")
        assert turn.reply.endswith("did safe-x")
        assert turn.busy_to_idle_ms is not None and turn.busy_to_idle_ms >= 400
        turn = s.send("do risky")
        assert turn.status is TurnStatus.WAITING
        asked = time.monotonic()
        s.answer(["y", "enter"])
        done = s.wait_turn(timeout=10)
        assert done.reply.endswith("did risky")
        assert time.monotonic() - asked >= 0.35


def test_startup_settle_is_separate_from_the_turn_settle() -> None:
    spec = fake_adapter(ECHO.replace("settle_ms: 0", "settle_ms: 0\nstartup: {settle_ms: 600}"))
    s = Session(spec)
    began = time.monotonic()
    s.start()
    try:
        assert time.monotonic() - began >= 0.55
        turn = s.send("quick")
        assert turn.busy_to_idle_ms is not None and turn.busy_to_idle_ms < 500
    finally:
        s.stop()


#: tests/fakes/late_input.py: its input box is up (and echoes keys) before it takes Enter.
LATE = r"""
command: ["{py}", "{fakes}/late_input.py"]
detect: screen
terminal: {rows: 24, cols: 80}
states:
  - {name: working, state: busy, priority: 20, any: ['^  esc to interrupt$']}
  - {name: prompt, state: idle, priority: 10, all: ['^─{20,}\n❯.*\n─{20,}$']}
settle_ms: 50
startup: {settle_ms: 30}
submit: {keys: [enter], delay_ms: 50, verify: busy, verify_timeout_ms: 400, retry: 3}
reply: {from: screen-delta, start: ['^● '], trim: ['^● ']}
exit: {keys: [ctrl-c], timeout_s: 3}
"""


def test_a_prompt_left_in_the_input_box_is_submitted_again() -> None:
    # The box reads idle while the welcome line above it is still animated, and Enter is
    # dropped for the first second: the screen keeps moving, but the prompt stays in the box,
    # which is no proof the tool took it. The Enter is pressed again until it is taken.
    with Session(fake_adapter(LATE), env={"FAKE_DEAF_S": "1.0"}) as s:
        turn = s.send("hello there", timeout=10)
        assert turn.status is TurnStatus.DONE
        assert turn.reply == "reply: hello there", s.screen_tail()
        assert turn.retries >= 1


def test_a_prompt_never_taken_fails_to_submit_while_the_screen_moves() -> None:
    with Session(fake_adapter(LATE), env={"FAKE_DEAF_S": "30"}) as s:
        with pytest.raises(SubmitFailed, match="did not take the prompt after 4 tries"):
            s.send("hello there", timeout=10)
        assert "❯ hello there" in s.screen_tail()
