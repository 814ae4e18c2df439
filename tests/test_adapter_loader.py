"""Adapter files: parsing with lines, exact error messages, ``extends`` merging, defaults,
the keys and region grammars, and the spec_to_dict round trip."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from aimterm.adapter.loader import load_file, load_text, spec_to_dict
from aimterm.adapter.schema import SCHEMA, schema_json
from aimterm.adapter.spec import AdapterSpec, KeyItem, Region
from aimterm.adapter.validator import SubsetValidator
from aimterm.errors import ConfigError

MINIMAL = """\
command: [python3, -q]
states:
  - {state: idle, any: '>>> $'}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_file(path, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def resolver_for(folder: Path):  # type: ignore[no-untyped-def]
    def resolve(name: str, requesting: Path) -> Path | None:
        candidate = folder / f"{name}.yaml"
        return candidate if candidate.exists() else None
    return resolve


# ---------------------------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------------------------

ERRORS = [
    pytest.param(
        """\
        command: x
        states:
          - state: idle
            any: a
            regoin: top:3
        """,
        "5: states[0].regoin: unknown key 'regoin' (expected one of: all, any, name, not, "
        "priority, region, state, title)", id="unknown-key"),
    pytest.param(
        """\
        command: x
        comand: y
        """,
        "2: comand: unknown key 'comand' (expected one of: answer_delay_ms, answers, command, "
        "cwd, description, "
        "detect, env, env_remove, exit, extends, interrupt, jobs, metrics, name, reply, resume, "
        "settle_ms, startup, states, submit, terminal, turn_timeout_s, verified)",
        id="unknown-top-key"),
    pytest.param(
        """\
        command: x

        settle_ms: fast
        """,
        "3: settle_ms: expected an integer, got string 'fast'", id="type-integer"),
    pytest.param(
        """\
        command: x
        env_remove: 5
        """,
        "2: env_remove: expected a list of strings, got integer 5", id="type-list"),
    pytest.param(
        """\
        command: x
        terminal: [1, 2]
        """,
        "2: terminal: expected a mapping, got list", id="type-mapping"),
    pytest.param(
        """\
        command: x
        description: 5
        cwd: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
        """,
        "2: description: expected a string, got integer 5", id="type-string"),
    pytest.param(
        """\
        command: x
        detect: pixels
        """,
        "2: detect: expected one of: screen, stream; got 'pixels'", id="enum"),
    pytest.param(
        """\
        command: x
        submit:
          verify: 5
        """,
        "3: submit.verify: expected one of: busy, output, none; got 5", id="enum-type"),
    pytest.param(
        """\
        command: x
        settle_ms: -5
        """,
        "2: settle_ms: expected an integer >= 0, got -5", id="minimum"),
    pytest.param(
        """\
        command: x
        terminal:
          rows: 1
        """,
        "3: terminal.rows: expected an integer from 2 to 1000, got 1", id="range"),
    pytest.param(
        """\
        command: x
        turn_timeout_s: 0
        """,
        "2: turn_timeout_s: expected a number > 0, got 0", id="exclusive-minimum"),
    pytest.param(
        """\
        command: x
        states:
          - state: idle
            any: ['ok', '(']
        """,
        "4: states[0].any[1]: bad regular expression: missing ), unterminated subpattern at "
        "position 0", id="bad-regex"),
    pytest.param(
        """\
        description: no command here
        states:
          - {state: idle, any: a}
        """,
        "1: command: missing: expected a command (a list of strings, or a string), or extends "
        "from an adapter that has one", id="missing-command"),
    pytest.param(
        """\
        command: [a, b
        """,
        "2: yaml: expected ',' or ']', but got '<stream end>'", id="yaml-syntax"),
    pytest.param(
        """\
        - command
        """,
        "1: expected a mapping of adapter settings at the top level", id="top-not-mapping"),
    pytest.param("", "1: empty adapter file", id="empty"),
    pytest.param("# only a comment\n", "1: empty adapter file", id="only-comment"),
    pytest.param(
        """\
        command: x
        detect: screen
        detect: stream
        """,
        "3: detect: duplicate key 'detect'", id="duplicate-key"),
    pytest.param(
        """\
        command: x
        states:
          - {state: idle, any: a}
        answers:
          - match: 'Edit (?P<path>\\S+)\\?'
            send: y
            when:
              file: '\\.py$'
        """,
        "8: answers[0].when.file: no group named 'file' in match", id="when-group"),
    pytest.param(
        """\
        command: x
        states:
          - {state: idle, any: a}
        metrics:
          cost: '\\$(?P<usd>[0-9.]+)'
          tokens: '[0-9]+ tokens'
        """,
        "6: metrics.tokens: expected a pattern with named groups (?P<name>...)", id="metric"),
    pytest.param(
        """\
        command: x
        states:
          - {state: idle, any: a, region: middle}
        """,
        "3: states[0].region: expected a region: all, top:N, bottom:N, rows:A-B, cursor or "
        "cursor:N; got 'middle'", id="region-shape"),
    pytest.param(
        """\
        command: x
        states:
          - {state: idle, any: a, region: 'rows:5-2'}
        """,
        "3: states[0].region: expected a region: all, top:N, bottom:N, rows:A-B, cursor or "
        "cursor:N; got 'rows:5-2'", id="region-order"),
    pytest.param(
        """\
        command: x
        states:
          - {state: idle, not: busy}
        """,
        "3: states[0]: expected at least one of: any, all, title", id="no-positive"),
    pytest.param(
        """\
        command: x
        states:
          - {state: busy, any: working}
        """,
        "2: states: expected at least one rule with state: idle", id="no-idle"),
    pytest.param(
        """\
        command: x
        """,
        "1: states: expected at least one rule with state: idle", id="no-states"),
    pytest.param(
        """\
        command: x
        states:
          - {state: idle, any: a}
        submit:
          keys: [{key: entr}]
        """,
        "5: submit.keys[0].key: unknown key name 'entr'", id="unknown-key-name"),
    pytest.param(
        """\
        name: My Tool
        command: x
        """,
        "1: name: expected a name of lowercase letters, digits, '.', '_' or '-'; got 'My Tool'",
        id="bad-name"),
    pytest.param(
        """\
        command: x
        states:
          - any: a
        """,
        "3: states[0].state: missing: expected one of: idle, busy, waiting", id="required"),
    pytest.param(
        """\
        command: x
        submit:
          keys: [{key: enter, text: x}]
        """,
        "3: submit.keys[0]: expected a mapping with exactly one of: key, text, paste, wait_ms; "
        "got 2 keys", id="key-item-two"),
    pytest.param(
        """\
        command: []
        """,
        "1: command: expected a command (a list of strings, or a string), got an empty list",
        id="empty-command"),
    pytest.param(
        """\
        command: 5
        """,
        "1: command: expected a command (a list of strings, or a string), got integer 5",
        id="command-type"),
    pytest.param(
        """\
        command: x
        env:
          A: null
        """,
        "3: env.A: expected a string, a number, or true/false, got null", id="env-null"),
    pytest.param(
        """\
        command: x
        cwd: 'a-very-long-value-that-goes-on-and-on-and-on-and-on'
        resume: 7
        """,
        "3: resume: expected a command (a list of strings, or a string), got integer 7",
        id="resume-type"),
    pytest.param(
        """\
        command: x
        env_remove: 'a-very-long-value-that-goes-on-and-on-and-on-and-on'
        """,
        "2: env_remove: expected a list of strings, got string "
        "'a-very-long-value-that-goes-on-and-o...", id="shortened"),
    pytest.param(
        """\
        extends: nope
        """,
        "1: extends: unknown parent adapter 'nope'", id="unknown-parent"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_error_messages(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "tool.yaml", text)
    assert error_of(path) == f"{path}:{expected}"


def test_error_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "tool.yaml", "command: x\nsettle_ms: fast\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert (info.value.path, info.value.line, info.value.key) == (str(path), 2, "settle_ms")
    assert info.value.reason == "expected an integer, got string 'fast'"


def test_first_error_by_line_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "tool.yaml", """\
        command: x
        states:
          - {state: idle, any: a, regoin: top:3}
        settle_ms: fast
        detect: pixels
        """)
    assert error_of(path) == (
        f"{path}:3: states[0].regoin: unknown key 'regoin' (expected one of: all, any, name, "
        "not, priority, region, state, title)")


def test_first_semantic_error_by_line_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "tool.yaml", """\
        command: x
        metrics:
          tokens: 'x'
        states:
          - {state: idle, any: '('}
        """)
    assert error_of(path) == (
        f"{path}:3: metrics.tokens: expected a pattern with named groups (?P<name>...)")


def test_load_text_names_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("command: x\nsettle_ms: fast\n")
    assert str(info.value) == "<string>:2: settle_ms: expected an integer, got string 'fast'"


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert error_of(path).startswith(f"{path}: cannot read the file: ")


# ---------------------------------------------------------------------------------------------
# Conversion and defaults
# ---------------------------------------------------------------------------------------------


def test_minimal_defaults(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "py-repl.yaml", MINIMAL))
    assert spec.name == "py-repl"
    assert spec.command == ("python3", "-q")
    assert spec.source == str(tmp_path / "py-repl.yaml")
    assert spec.origin == "file"
    assert spec.detect == "screen"
    assert spec.settle_ms == 300
    assert spec.submit.verify == "busy"
    assert spec.reply.from_ == "screen-delta"
    assert spec.interrupt == (KeyItem("key", "ctrl-c"),)
    assert spec.submit.keys == (KeyItem("key", "enter"),)
    assert spec.terminal.rows == 40
    rule = spec.states[0]
    assert (rule.state, rule.name, rule.priority, rule.region) == ("idle", "idle#0", 0, Region())
    assert rule.line == 3 and rule.source == spec.source
    assert rule.any[0].pattern == ">>> $"
    assert rule.any[0].search("x\n>>> \ny")  # compiled with re.MULTILINE


def test_stream_defaults(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "s.yaml", MINIMAL + "detect: stream\n"))
    assert spec.settle_ms == 0
    assert spec.submit.verify == "output"
    assert spec.reply.from_ == "stream"


def test_explicit_values_beat_detect_defaults(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "s.yaml", MINIMAL + textwrap.dedent("""\
        detect: stream
        settle_ms: 50
        submit: {verify: none}
        reply: {from: none}
        """)))
    assert (spec.settle_ms, spec.submit.verify, spec.reply.from_) == (50, "none", "none")


def test_command_string_is_split(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "s.yaml", """\
        command: "claude --model 'opus 4'"
        resume: --continue --verbose
        states: [{state: idle, any: a}]
        """))
    assert spec.command == ("claude", "--model", "opus 4")
    assert spec.resume == ("--continue", "--verbose")


def test_env_values_and_order(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "s.yaml", MINIMAL + textwrap.dedent("""\
        env:
          ZED: hello
          COUNT: 3
          RATIO: 1.5
          ON: true
          OFF: false
        env_remove: [CLAUDECODE]
        cwd: /tmp
        """)))
    assert spec.env == (("ZED", "hello"), ("COUNT", "3"), ("RATIO", "1.5"), ("ON", "1"),
                        ("OFF", "0"))
    assert spec.env_remove == ("CLAUDECODE",)
    assert spec.cwd == "/tmp"


def test_state_rule_fields(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "s.yaml", """\
        command: x
        states:
          - {state: idle, any: a}
          - state: busy
            name: spinner
            priority: 5
            region: bottom:3
            all: [x, y]
            not: z
            title: '^working'
          - state: waiting
            title: 'question'
        """))
    idle, busy, waiting = spec.states
    assert busy.name == "spinner" and busy.priority == 5 and busy.line == 4
    assert busy.region == Region("bottom", 3)
    assert [p.pattern for p in busy.all] == ["x", "y"]
    assert [p.pattern for p in busy.not_] == ["z"]
    assert busy.title is not None and busy.title.pattern == "^working"
    assert waiting.name == "waiting#2" and waiting.any == ()
    assert spec.rules_by_priority()[0] is busy


@pytest.mark.parametrize(("text", "region"), [
    ("all", Region()),
    ("top:3", Region("top", 3)),
    ("bottom:12", Region("bottom", 12)),
    ("rows:2-5", Region("rows", 2, 5)),
    ("rows:4-4", Region("rows", 4, 4)),
    ("cursor", Region("cursor", 1)),
    ("cursor:4", Region("cursor", 4)),
])
def test_regions(tmp_path: Path, text: str, region: Region) -> None:
    spec = load_file(write(tmp_path, "r.yaml", MINIMAL + f"reply: {{region: '{text}'}}\n"))
    assert spec.reply.region == region
    assert str(spec.reply.region) == text


@pytest.mark.parametrize("text", ["top:0", "rows:0-2", "rows:3-2", "middle", "top 3", "cursor:"])
def test_bad_regions(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + f"reply: {{region: '{text}'}}\n")
    assert error_of(path) == (
        f"{path}:4: reply.region: expected a region: all, top:N, bottom:N, rows:A-B, cursor or "
        f"cursor:N; got {text!r}")


def test_keys_grammar(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "k.yaml", MINIMAL + textwrap.dedent("""\
        submit:
          keys: [Enter, hello, {key: Tab}, {text: enter}, {paste: "a\\nb"}, {wait_ms: 200}]
          clear: ctrl-u
        exit:
          keys: "/exit"
        interrupt:
          keys: [escape, ctrl-c]
        """)))
    assert spec.submit.keys == (
        KeyItem("key", "enter"),
        KeyItem("text", "hello"),
        KeyItem("key", "tab"),
        KeyItem("text", "enter"),
        KeyItem("paste", "a\nb"),
        KeyItem("wait", ms=200),
    )
    # A plain string is always text, even when it spells a key name.
    assert spec.submit.clear == (KeyItem("text", "ctrl-u"),)
    assert spec.exit.keys == (KeyItem("text", "/exit"),)
    assert spec.interrupt == (KeyItem("key", "escape"), KeyItem("key", "ctrl-c"))


def test_wait_ms_must_not_be_negative(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", MINIMAL + "submit:\n  keys: [{wait_ms: -1}]\n")
    assert error_of(path) == f"{path}:5: submit.keys[0].wait_ms: expected an integer >= 0, got -1"


def test_unknown_key_item_field(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", MINIMAL + "submit:\n  keys: [{kye: enter}]\n")
    assert error_of(path) == (f"{path}:5: submit.keys[0].kye: unknown key 'kye' (expected one "
                              "of: key, paste, text, wait_ms)")


def test_dialogs_answers_metrics(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "d.yaml", MINIMAL + textwrap.dedent("""\
        startup:
          timeout_s: 30
          dialogs:
            - match: 'Do you trust the files'
              send: [enter]
            - {name: theme, match: 'Choose a theme', send: [down, enter], region: top:10}
        answers:
          - match: 'Edit (?P<file>\\S+)\\?'
            when: {file: '\\.py$'}
            send: [y, enter]
            region: cursor
        metrics:
          tokens: '(?P<tokens>\\d+) tokens'
          cost: '\\$(?P<usd>[0-9.]+)'
        """)))
    first, second = spec.startup.dialogs
    assert spec.startup.timeout_s == 30.0
    assert first.name == "dialog#0" and first.send == (KeyItem("key", "enter"),)
    assert first.line == 7
    assert second.name == "theme" and second.region == Region("top", 10)
    answer = spec.answers[0]
    assert answer.name == "answer#0" and answer.region == Region("cursor", 1)
    assert [(g, p.pattern) for g, p in answer.when] == [("file", r"\.py$")]
    assert answer.send == (KeyItem("text", "y"), KeyItem("key", "enter"))
    assert [name for name, _ in spec.metrics] == ["tokens", "cost"]
    assert spec.metrics[0][1].search("used 12 tokens")


# ---------------------------------------------------------------------------------------------
# extends
# ---------------------------------------------------------------------------------------------

BASE = """\
name: base
description: the base tool
command: [base-tool, --flag]
env: {A: "1", B: "2"}
terminal: {rows: 30, cols: 100}
states:
  - {state: idle, any: '^> $'}
  - {state: busy, any: 'working'}
submit: {paste: bracketed, retry: 3}
metrics:
  tokens: '(?P<tokens>\\d+) tokens'
"""


def test_extends_merge_rules(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """\
        extends: base
        env: {B: "20", C: "3"}
        terminal: {rows: 50}
        states:
          - {state: idle, any: '^>> $'}
        submit: {retry: 0}
        """)
    spec = load_file(child, resolver=resolver_for(tmp_path))
    assert spec.name == "child"  # never inherited
    assert spec.extends == "base"
    assert spec.description == "the base tool"
    assert spec.command == ("base-tool", "--flag")
    assert spec.env == (("A", "1"), ("B", "20"), ("C", "3"))
    assert (spec.terminal.rows, spec.terminal.cols) == (50, 100)
    assert [r.any[0].pattern for r in spec.states] == ["^>> $"]  # lists replaced whole
    assert spec.states[0].source == str(child) and spec.states[0].line == 5
    assert (spec.submit.paste, spec.submit.retry) == ("bracketed", 0)
    assert [name for name, _ in spec.metrics] == ["tokens"]


def test_extends_inherited_rule_keeps_its_file(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "extends: base\n")
    spec = load_file(child, resolver=resolver_for(tmp_path))
    assert spec.name == "child"
    assert spec.states[1].source == str(base) and spec.states[1].line == 8


def test_extends_error_in_inherited_value_names_the_parent(tmp_path: Path) -> None:
    parent = write(tmp_path, "base.yaml", """\
        command: x
        states:
          - {state: idle, any: '(unclosed'}
        """)
    child = write(tmp_path, "child.yaml", "extends: base\nsettle_ms: 10\n")
    assert error_of(child, resolver=resolver_for(tmp_path)) == (
        f"{parent}:3: states[0].any: bad regular expression: missing ), unterminated "
        "subpattern at position 0")


def test_extends_structural_error_in_parent_points_into_parent(tmp_path: Path) -> None:
    parent = write(tmp_path, "base.yaml", "command: x\n\nsettle_ms: fast\n")
    child = write(tmp_path, "child.yaml", "extends: base\n")
    assert error_of(child, resolver=resolver_for(tmp_path)) == (
        f"{parent}:3: settle_ms: expected an integer, got string 'fast'")


def test_extends_child_error_points_into_child(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "extends: base\nterminal: {rows: many}\n")
    assert error_of(child, resolver=resolver_for(tmp_path)) == (
        f"{child}:2: terminal.rows: expected an integer, got string 'many'")


def test_extends_command_from_parent_satisfies_requirement(tmp_path: Path) -> None:
    write(tmp_path, "abstract.yaml", "states: [{state: idle, any: a}]\n")
    child = write(tmp_path, "child.yaml", "extends: abstract\n")
    assert error_of(child, resolver=resolver_for(tmp_path)) == (
        f"{child}:1: command: missing: expected a command (a list of strings, or a string), "
        "or extends from an adapter that has one")
    write(tmp_path, "full.yaml", "extends: abstract\ncommand: tool\n")
    assert load_file(tmp_path / "full.yaml", resolver=resolver_for(tmp_path)).command == ("tool",)


def test_extends_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "command: x\nextends: b\n")
    b = write(tmp_path, "b.yaml", "# b\nextends: a\n")
    assert error_of(tmp_path / "a.yaml", resolver=resolver_for(tmp_path)) == (
        f"{b}:2: extends: cycle in extends: a -> b -> a")


def test_extends_self_cycle(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "command: x\nextends: a\n")
    assert error_of(a, resolver=resolver_for(tmp_path)) == (
        f"{a}:2: extends: cycle in extends: a -> a")


def test_extends_unknown_parent(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "command: x\n\nextends: nope\n")
    assert error_of(child, resolver=resolver_for(tmp_path)) == (
        f"{child}:3: extends: unknown parent adapter 'nope'")


def test_extends_resolver_gets_requesting_file(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    upper = tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    write(lower, "tool.yaml", MINIMAL)
    top = write(upper, "tool.yaml", "extends: tool\nsettle_ms: 5\n")
    calls: list[tuple[str, Path]] = []

    def resolve(name: str, requesting: Path) -> Path | None:
        calls.append((name, requesting))
        return lower / f"{name}.yaml" if requesting != lower / f"{name}.yaml" else None

    spec = load_file(top, resolver=resolve)
    assert calls == [("tool", top)]
    assert spec.settle_ms == 5 and spec.command == ("python3", "-q")


# ---------------------------------------------------------------------------------------------
# Round trip and schema
# ---------------------------------------------------------------------------------------------

RICH = """\
name: rich-tool
description: everything at once
command: "rich --mode 'a b'"
env: {TERM_PROGRAM: aimterm, DEBUG: false, LEVEL: 2}
env_remove: [CLAUDECODE]
cwd: /srv
terminal: {rows: 50, cols: 160, term: xterm, key_gap_ms: 10, scrollback: 500}
detect: stream
turn_timeout_s: 120.5
states:
  - {state: idle, any: ['^> $', '^\\$ $'], region: bottom:2}
  - {state: busy, name: spin, priority: 3, all: [esc to interrupt], not: error, title: '^\\*'}
  - {state: waiting, any: '\\(y/n\\)', region: 'rows:1-5'}
startup:
  timeout_s: 20
  dialogs:
    - {match: 'trust', send: [enter], region: cursor}
submit:
  paste: bracketed
  keys: [{wait_ms: 50}, Enter, {text: tab}, {paste: x}, plain]
  delay_ms: 100
  retry: 2
  clear: [ctrl-u]
answers:
  - {match: 'Edit (?P<file>\\S+)', when: {file: '\\.md$'}, send: "y", region: 'cursor:3'}
reply:
  strip: [echo]
  chrome: ['^─+$']
  region: top:30
metrics:
  tokens: '(?P<n>\\d+) tokens'
exit: {keys: ['/exit', enter], timeout_s: 2, signal_grace_s: 0.5}
interrupt: {keys: [escape]}
resume: [--continue]
"""


def test_spec_to_dict_round_trip(tmp_path: Path) -> None:
    spec = load_file(write(tmp_path, "rich.yaml", RICH))
    data = spec_to_dict(spec)
    again = load_text(yaml.safe_dump(data))
    assert spec_to_dict(again) == data
    assert again.submit.keys == spec.submit.keys
    assert spec.env == (("TERM_PROGRAM", "aimterm"), ("DEBUG", "0"), ("LEVEL", "2"))
    assert dict(again.env) == dict(spec.env)
    # Dumped in insertion order, even the ordered mappings (env, metrics) come back the same.
    unsorted = load_text(yaml.safe_dump(data, sort_keys=False))
    assert (unsorted.env, unsorted.metrics) == (spec.env, spec.metrics)
    assert data["command"] == ["rich", "--mode", "a b"]
    assert data["submit"]["keys"] == [{"wait_ms": 50}, "enter", {"text": "tab"},
                                      {"paste": "x"}, "plain"]
    assert data["states"][2]["region"] == "rows:1-5"
    assert data["reply"]["from"] == "stream"
    assert "extends" not in data
    # The plain data satisfies the schema as well.
    assert not list(Draft202012Validator(SCHEMA).iter_errors(data))


def test_spec_to_dict_of_extended_adapter(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "extends: base\nsettle_ms: 1\n")
    spec = load_file(child, resolver=resolver_for(tmp_path))
    data = spec_to_dict(spec)
    assert data["name"] == "child"
    assert spec_to_dict(load_text(yaml.safe_dump(data))) == data


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] and SCHEMA["title"]
    assert '"$schema": "https://json-schema.org/draft/2020-12/schema"' in schema_json()


def _walk_properties(schema: object, where: str = "") -> list[str]:
    missing: list[str] = []
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{where}.{name}")
        for key, sub in schema.items():
            missing += _walk_properties(sub, f"{where}/{key}")
    elif isinstance(schema, list):
        for item in schema:
            missing += _walk_properties(item, where)
    return missing


def test_schema_describes_every_property_and_closes_every_object() -> None:
    assert _walk_properties(SCHEMA) == []

    def objects(node: object) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        if isinstance(node, dict):
            if "properties" in node:
                found.append(node)
            for sub in node.values():
                found += objects(sub)
        elif isinstance(node, list):
            for sub in node:
                found += objects(sub)
        return found

    assert all(obj.get("additionalProperties") is False for obj in objects(SCHEMA))


def test_schema_accepts_minimal_and_rejects_unknown() -> None:
    validator = Draft202012Validator(SCHEMA)
    assert validator.is_valid({})
    assert validator.is_valid(yaml.safe_load(MINIMAL))
    assert not validator.is_valid({"bogus": 1})


def test_schema_module_does_not_import_jsonschema() -> None:
    code = ("import sys, aimterm.adapter.schema as s; s.schema_json(); "
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"


def test_loaded_spec_is_an_adapter_spec(tmp_path: Path) -> None:
    spec = load_text(MINIMAL, "/somewhere/tool.yml", origin="user")
    assert isinstance(spec, AdapterSpec)
    assert (spec.name, spec.origin, spec.source) == ("tool", "user", "/somewhere/tool.yml")


def _nodes(data: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _nodes(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += _nodes(value, (*path, index))
    return out


_ODD_VALUES = [None, True, False, 0, -1, 1, 2.5, 3.0, -0.5, 10**12, "", "x", "idle", "busy",
               "rows:2-5", "Bad Name", "bottom:3", "enter", [], [1], ["x", 2], {}, {"bogus": 1},
               {"match": "x"}, {"text": 1, "paste": 2}, [{}], {"wait_ms": -3}]


@pytest.mark.parametrize("adapter", sorted(p.name for p in
                                           (Path(__file__).resolve().parent.parent
                                            / "adapters").glob("*.yaml")))
def test_the_adapter_validator_finds_what_jsonschema_finds(adapter: str) -> None:
    # The loader's own validator against jsonschema: the same errors, in the same order, on
    # every built-in adapter with one or two of its nodes replaced, removed or joined.
    import copy
    import random



    path = Path(__file__).resolve().parent.parent / "adapters" / adapter
    original = yaml.safe_load(path.read_text())
    ours, theirs = SubsetValidator(SCHEMA), Draft202012Validator(SCHEMA)
    rng = random.Random(adapter)

    def errors_of(data: object) -> tuple[list[object], list[object]]:
        return ([(e.validator, tuple(e.absolute_path), e.message, e.schema, e.instance)
                 for e in ours.iter_errors(data)],
                [(e.validator, tuple(e.absolute_path), e.message, e.schema, e.instance)
                 for e in theirs.iter_errors(data)])

    a, b = errors_of(original)
    assert a == b == []
    for _ in range(300):
        data = yaml.safe_load(path.read_text())
        for _ in range(rng.randint(1, 3)):
            target = rng.choice(_nodes(data))
            if not target:
                continue
            parent: object = data
            for step in target[:-1]:
                parent = parent[step]  # type: ignore[index]
            what = rng.random()
            if what < 0.6:
                parent[target[-1]] = copy.deepcopy(rng.choice(_ODD_VALUES))  # type: ignore[index]
            elif what < 0.8 and isinstance(parent, dict):
                del parent[target[-1]]
            elif isinstance(parent, dict):
                parent[rng.choice(["bogus", "zz", "a"])] = copy.deepcopy(rng.choice(_ODD_VALUES))
        a, b = errors_of(data)
        # (in order but for a value mapping's own entries: jsonschema takes those from a set)
        assert sorted(map(repr, a)) == sorted(map(repr, b)), data


def test_the_adapter_validator_refuses_a_keyword_it_does_not_check() -> None:


    SubsetValidator(SCHEMA)
    with pytest.raises(TypeError):
        SubsetValidator({"type": "object", "properties": {"a": {"oneOf": []}}})
    with pytest.raises(TypeError):
        SubsetValidator({"type": "string", "format": "uri"})


def test_loading_an_adapter_does_not_import_jsonschema() -> None:
    code = ("import sys; from aimterm.adapter.registry import load_adapter; "
            "load_adapter('demo'); print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"


def test_a_schema_past_the_subset_is_checked_by_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    from aimterm.adapter import loader

    monkeypatch.setattr(loader, "_validator_cache", [])
    monkeypatch.setattr(loader, "SCHEMA", {"type": "object", "properties": {
        "name": {"type": "string", "format": "hostname"}}})
    assert isinstance(loader._validator(), Draft202012Validator)
    monkeypatch.setattr(loader, "_validator_cache", [])
    monkeypatch.setattr(loader, "SCHEMA", SCHEMA)
    assert isinstance(loader._validator(), SubsetValidator)
