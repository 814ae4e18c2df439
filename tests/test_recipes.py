"""Reply cutting and key writes: pure functions of the adapter and the lines."""

from __future__ import annotations

from aimterm.adapter.detector import Detector
from aimterm.adapter.recipes import clean_reply, join_wrapped, key_writes, screen_delta
from aimterm.adapter.spec import KeyItem
from tests.helpers import fake_adapter

SPEC = fake_adapter("""
command: [x]
states: [{state: idle, any: ['^❯$']}]
reply:
  strip: [echo, chrome]
  chrome: ['^Tokens:']
  trim: ['^(?:● |  )']
startup:
  dialogs:
    - {name: auth, match: 'Existing API key detected', send: [enter]}
    - {name: key-box, match: 'Enter Gemini API Key', send: [enter]}
""")


def test_trim_cuts_bullets_and_hanging_indent_after_echo_and_chrome() -> None:
    lines = ["> what now", "● first line", "  second line", "Tokens: 3 sent", "plain"]
    assert clean_reply(SPEC, lines, "what now") == "first line\nsecond line\nplain"


def test_join_wrapped_joins_soft_wraps_but_not_rules() -> None:
    cols = 10
    assert join_wrapped(["abcdefghij", "klm", "x"], cols) == ["abcdefghijklm", "x"]
    assert join_wrapped(["──────────", "❯ hi"], cols) == ["──────────", "❯ hi"]
    assert join_wrapped(["----------", "next"], cols) == ["----------", "next"]


def test_screen_delta_keeps_order_of_new_lines() -> None:
    before = ["a", "b", "c", "❯"]
    after = ["b", "c", "> q", "answer", "❯"]
    assert screen_delta(before, after) == ["> q", "answer"]


def test_every_matching_dialog_is_found_in_file_order() -> None:
    screen = ["Enter Gemini API Key", "│ x │", "Existing API key detected (GEMINI_API_KEY)"]
    names = [f.rule.name for f in Detector(SPEC).find_dialogs(screen)]
    assert names == ["auth", "key-box"]


def test_key_writes_are_separate_with_gaps_and_waits() -> None:
    writes = key_writes((KeyItem("text", "/exit"), KeyItem("wait", ms=40),
                         KeyItem("key", "enter"), KeyItem("key", "down")), gap_ms=25)
    assert [(w.data, w.pause_s) for w in writes] == [(b"/exit", 0.0), (b"\r", 0.04),
                                                     (b"\x1b[B", 0.025)]


LONG = ('Quote test: "double", \'single\', `backticks`, and non-Latin scripts — Ελληνικά, '
        'русский, 日本語, العربية — plus an emoji 🚀, long enough to wrap on any terminal.')


def test_the_echo_of_a_wrapped_prompt_goes_however_it_wraps() -> None:
    import textwrap

    reply = ["FAKE-REPLY 1234: the answer", "second line"]
    for width in (30, 46, 80):
        at_words = textwrap.wrap(LONG, width)
        shown = [f"> {at_words[0]}", *(f"  {w}" for w in at_words[1:])]  # a marker, an indent
        assert clean_reply(SPEC, shown + reply, LONG) == "\n".join(reply), width
        mid_word = [LONG[i:i + width] for i in range(0, len(LONG), width)]  # cut anywhere
        assert clean_reply(SPEC, ["› " + mid_word[0], *mid_word[1:], *reply], LONG) == \
            "\n".join(reply), width
        boxed = [f"│ > {w:<{width}} │" for w in at_words]  # inside an input box
        assert clean_reply(SPEC, boxed + reply, LONG) == "\n".join(reply), width


def test_a_multi_line_prompt_and_lines_that_only_look_like_it() -> None:
    prompt = "first line of it\nsecond line\n\nthird"
    lines = ["❯ first line of it", "  second line", "  third", "the reply"]
    assert clean_reply(SPEC, lines, prompt) == "the reply"
    # A reply that starts like the prompt but does not show all of it keeps its lines.
    assert clean_reply(SPEC, ["first line of it", "is what you said"], prompt) == \
        "first line of it\nis what you said"
    assert clean_reply(SPEC, ["no echo here", "at all"], prompt) == "no echo here\nat all"


def test_end_cuts_at_the_last_rule_after_the_reply_and_redraws_drop_half_frames() -> None:
    import dataclasses
    import re

    spec = dataclasses.replace(SPEC, reply=dataclasses.replace(
        SPEC.reply, strip=("echo", "chrome", "redraws"), end=(re.compile("^─{5,}$"),),
        chrome=(re.compile("^─{5,}$"),)))
    lines = ["─────", "> what now", "The answ", "The answer is here", "─────", "notes.txt", "❯"]
    assert clean_reply(spec, lines, "what now") == "The answer is here"
    # A rule only at the top (before any of the reply) is not an end.
    assert clean_reply(spec, ["─────", "> what now", "Just this"], "what now") == "Just this"


def test_screen_delta_keeps_the_blank_lines_between_new_paragraphs() -> None:
    before = ["", "", "", "", "❯"]
    after = ["❯ give me two", "", "● Here is one.", "", "  And two.", "", "✻ Worked", "❯"]
    assert screen_delta(before, after) == after[:-1]


def test_start_begins_the_reply_at_the_tools_answer_marker() -> None:
    import dataclasses
    import re

    spec = dataclasses.replace(SPEC, reply=dataclasses.replace(
        SPEC.reply, start=(re.compile("^● "),)))
    # The echo as the screen drew it (markdown rendered, a character dropped): not the prompt.
    lines = ["❯ Please read `this`: हिन्दी", "  and more", "● The answer", "  goes on"]
    assert clean_reply(spec, lines, "Please read `this`: हिन्दी and more") == \
        "The answer\ngoes on"
    assert clean_reply(spec, ["no marker", "here"], "x") == "no marker\nhere"


def test_an_echo_drawn_as_markdown_and_the_last_turns_row_above_it_go() -> None:
    prompt = ("please run `make test` and then tell me, in one short line, whether every one "
              "of the tests passed")
    lines = ["  Done before.", "", "› please run make test and then tell me,",
             "  in one short line, whether every one of", "  the tests passed", "", "• Done."]
    assert clean_reply(SPEC, lines, prompt) == "• Done."


def test_screen_delta_keeps_blank_rows_between_new_runs_past_old_ones() -> None:
    before = ["› earlier prompt", "", "• Earlier reply.", "", "", "", "", "", ""]
    after = ["› earlier prompt", "", "• Earlier reply.", "", "› next prompt", "",
             "• First paragraph.", "", "  Second paragraph."]
    assert screen_delta(before, after) == ["› next prompt", "", "• First paragraph.", "",
                                           "  Second paragraph."]


def test_join_scrollback_drops_a_redrawn_repeat_only() -> None:
    from aimterm.adapter.recipes import join_scrollback

    scrolled = ["> prompt", "✦ Echo: one", "  two", "  three"]
    screen = ["✦ Echo: one", "  two", "  three", "", "> "]
    assert join_scrollback(scrolled[:1], screen) == ["> prompt", *screen]
    assert join_scrollback(scrolled, screen) == [*scrolled, "", "> "]
    # One repeated line is not a redraw (a reply may say the same thing twice).
    assert join_scrollback(["a", "same"], ["same", "b"]) == ["a", "same", "same", "b"]
