"""The codex adapter against a recording of the real Codex CLI (runs without the CLI).

``tests/fixtures/codex.cast`` was made with ``aimterm adapter record codex`` against the fake
model server, in a throwaway HOME (/var/tmp/aimterm-codex-rec/home), with two prompts: a plain
one, and one whose scripted answer is a file edit, so codex asks "Would you like to make the
following edits?". The recording used a user-level override ``codex.yaml`` (``extends: codex``
plus the answer rule below) found through ``$AIMTERM_ADAPTER_PATH``; the test puts the same
override on the search path, so ``load_adapter("codex")`` is what the live run used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aimterm.adapter.recipes import clean_reply, join_wrapped, screen_delta
from aimterm.adapter.registry import load_adapter
from aimterm.adapter.replay import explain_file
from aimterm.adapter.spec import AdapterSpec
from aimterm.term.responder import Responder
from aimterm.term.screen import Screen, Snapshot
from aimterm.term.transcript import read_recording
from aimterm.testing.plugin import AdapterDir

CAST = Path(__file__).parent / "fixtures" / "codex.cast"

OVERRIDE = r"""
extends: codex
answers:
  - name: edit-in-tree
    match: 'Would you like to make the following edits\?(?:\n.*){0,6}?\n  Destination: (?P<file>/\S+)'
    when: {file: '^/var/tmp/aimterm-codex-rec/work/(?!.*\.\./)'}
    send: "y"
"""


@pytest.fixture
def with_override(aimterm_adapters: AdapterDir) -> None:
    aimterm_adapters.add("codex", OVERRIDE)


def test_codex_recording_replays_as_recorded(with_override: None) -> None:
    spec = load_adapter("codex")
    assert [a.name for a in spec.answers] == ["edit-in-tree"]
    result = explain_file(spec, str(CAST))
    assert result.flags == []
    assert result.turns == 2
    # start-up: the trust-folder dialog, then idle; turn 1 plain; turn 2 with the edit approved
    # by the rule (busy throughout, no WAITING), then idle.
    assert result.states() == ["idle", "busy", "idle", "busy", "idle"]
    assert [(c.old, c.new, c.rule) for c in result.changes] == [
        ("starting", "idle", "prompt"),
        ("idle", "busy", None),
        ("busy", "idle", "prompt"),
        ("idle", "busy", None),
        ("busy", "idle", "prompt"),
    ]
    assert [rule for _t, rule, _q in result.answered] == ["trust-folder", "edit-in-tree"]
    edit_question = result.answered[1][2]
    assert edit_question.endswith("Destination: /var/tmp/aimterm-codex-rec/work/notes.txt")
    # The first idle comes after the loading frame (which already shows the prompt and
    # "? for shortcuts") and after the trust dialog: only once the status row is drawn.
    assert result.changes[0].t > result.answered[0][0]
    assert "GPT-5.5 default · " in result.changes[0].text


def test_builtin_codex_adapter_approves_nothing(aimterm_adapters: AdapterDir) -> None:
    spec = load_adapter("codex")
    assert spec.answers == ()
    result = explain_file(spec, str(CAST))
    # Without the user's answer rule the same screens make the session WAIT on the edit,
    # naming the file; the live run (which had the rule) did not, hence the one mismatch flag.
    assert result.states() == ["idle", "busy", "idle", "busy", "waiting", "busy", "idle"]
    waiting = next(c for c in result.changes if c.new == "waiting")
    assert waiting.rule == "edit-approval"
    assert "Destination: /var/tmp/aimterm-codex-rec/work/notes.txt" in waiting.text
    assert [f.kind for f in result.flags] == ["mismatch"]


# -- 24×80, a folder long enough to wrap the status row ------------------------------------------

#: Recorded with ``aimterm adapter record codex`` (the adapter extended with ``terminal: {rows:
#: 24, cols: 80}``, codex 0.169.0, the fake model) in a folder whose path wraps codex's status
#: row onto a second row, with a short prompt and a ~250-character one that wraps in its echo.
CAST_24X80 = Path(__file__).parent / "fixtures" / "codex-24x80.cast"
PLAIN = ("Plain test: \"double\" and 'single' quotes, $dollar and \\backslash; Ελληνικά κείμενο, "
         "русский текст, 日本語のテキスト, العربية, עברית; emoji 🎉🚀✨ — a prompt long enough to "
         "wrap over several rows of the composer at 80 columns, twice over.")
REPLIES_24X80 = {"say hello in a few words": "Hello there, in a few words.", PLAIN: "Noted, all of it."}


def screen_replies(spec: AdapterSpec, path: Path) -> list[tuple[str, str]]:
    """(prompt, reply cut from the screen) of each turn of a recording, cut as a session cuts
    it: the reply region of the screen when the prompt was typed and when the turn was idle."""
    rec = read_recording(path)
    screen = Screen(rec.rows, rec.cols, spec.terminal.scrollback)
    responder = Responder()
    out: list[tuple[str, str]] = []
    before: Snapshot | None = None
    prompt = ""
    for _t, code, data in rec.events:
        if code == "o":
            for item in responder.split(data.encode("utf-8")):
                if isinstance(item, bytes):
                    screen.feed(item)
        elif code == "i" and data.startswith("\x1b[200~"):
            before, prompt = screen.snapshot(), data[6:].removesuffix("\x1b[201~")
        elif code == "m" and data.startswith("state busy->idle") and before is not None:
            after, region = screen.snapshot(), spec.reply.region
            lines = screen_delta(
                join_wrapped(region.select(before.lines, before.cursor[0]), rec.cols),
                join_wrapped(region.select(after.lines, after.cursor[0]), rec.cols))
            out.append((prompt, clean_reply(spec, lines, prompt)))
            before = None
    return out


def test_codex_at_24x80_with_a_wrapped_status_row(aimterm_adapters: AdapterDir) -> None:
    spec = load_adapter("codex")
    result = explain_file(spec, str(CAST_24X80))
    assert result.flags == []
    # The idle rule allows the status row to wrap: without that, never idle at all.
    assert result.states() == ["idle", "busy", "idle", "busy", "idle"]
    assert "a-folder-with-a-name-long-\n  enough-to-wrap" in result.changes[0].text
    # The screen's replies: no composer, status or footer rows ("⚠ 1 warning · f2 to view"),
    # no wrapped echo of the long prompt.
    assert screen_replies(spec, CAST_24X80) == list(REPLIES_24X80.items())
