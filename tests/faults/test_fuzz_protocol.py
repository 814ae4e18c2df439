"""Hypothesis against the control socket of one real daemon (in its own process, one per test):
every op the hello lists, with arguments of every JSON type, and envelopes and bytes that are
not protocol at all. Whatever comes in, each complete line gets exactly one reply (or one
stream) that is ok or an error with a documented code and a one-line message, the connection
goes on, and the daemon neither crashes nor logs a traceback.

Ops that would take the fleet apart are tamed (``down`` is never sent; ``drain`` only names
instances that do not exist; ``scale`` keeps every group as it is or adds an empty one), and
streams are cancelled or their connection closed, so one cluster lasts the whole run.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from aimterm.adapter.schema import NAME_PATTERN
from aimterm.errors import ProtocolError, UnknownOp, UnsupportedVersion
from aimterm.ipc.ops import MAX_PROMPT
from aimterm.ipc.protocol import MAX_ERROR_TEXT, MAX_LINE, decode, encode, error_reply
from tests.faults.test_limits import _no_traceback
from tests.test_daemon import Cluster, up

TIMEOUT = 20.0
DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
#: The instances of the test cluster (tests/test_daemon.py: two echo instances).
LIVE = ("echo-1", "echo-2")
#: Ops with no arguments a fuzzer could make harmless: never sent.
NEVER = frozenset({"down"})
#: A session's own error shows the screen it saw after its first line (errors.SessionError).
TAIL_HEAD = "  last screen lines:"

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def documented_codes() -> set[str]:
    """The error codes of the table in docs/protocol.md (its *Codes* section)."""
    section = DOCS.read_text().split("### Codes", 1)[1].split("\n## ", 1)[0]
    codes = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert {"internal", "bad_request", "unknown_op", "unknown_instance"} <= codes
    return codes


CODES = documented_codes()


# -- the wire ------------------------------------------------------------------------------------

class Wire:
    """One connection, spoken by hand, that reads every message the server sends."""

    _ids = iter(range(10**15, 10**16))  # pings: far from the ids the fuzzer picks

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        first = self.read()
        assert first is not None and "hello" in first, first
        self.hello: dict[str, Any] = first["hello"]

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_msg(self, msg: dict[str, Any]) -> None:
        self.send(json.dumps(msg).encode() + b"\n")

    def read(self) -> dict[str, Any] | None:
        """The next message, or None at end of input."""
        line = self.file.readline(MAX_LINE + 1)
        if not line:
            return None
        assert line.endswith(b"\n"), f"a message without its newline: {line[:200]!r}"
        msg: dict[str, Any] = json.loads(line)
        assert isinstance(msg, dict) and msg.get("v") == 1, line[:300]
        return msg

    def ping(self) -> None:
        """A ping answers, and its reply is the next message: nothing else was still due."""
        rid = next(self._ids)
        self.send_msg({"v": 1, "id": rid, "op": "ping"})
        reply = self.read()
        assert reply is not None, "the connection closed"
        assert reply["id"] == rid, f"a message after the replies were all in: {_cut(reply)}"
        assert reply["ok"] is True and reply["result"]["pong"] is True, reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _cut(value: Any, most: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= most else text[:most] + "…"


def check_error(error: dict[str, Any]) -> None:
    """A documented code, expected (no crash), and a message of one line, or for a
    session's own error one line then the screen it saw."""
    assert error["code"] in CODES, _cut(error)
    assert error["expected"] is True, f"a crash: {_cut(error)}"
    message = error["message"]
    assert isinstance(message, str) and message.strip(), _cut(error)
    first, _, tail = message.partition("\n")
    assert len(first.splitlines()) == 1, _cut(error)
    if tail:
        head, *shown = tail.split("\n")
        assert head == TAIL_HEAD and "screen_tail" in error, _cut(error)
        assert all(line.startswith("    | ") for line in shown), _cut(error)


def check_reply(msg: dict[str, Any], rid: int | None) -> None:
    """A reply to ``rid``: ok with a result, or an error as check_error wants it."""
    assert msg["id"] == rid and type(msg["id"]) is type(rid), (rid, _cut(msg))
    if msg.get("ok") is True:
        assert "result" in msg, _cut(msg)
    else:
        assert msg.get("ok") is False, _cut(msg)
        check_error(msg["error"])


def guessed_id(line: bytes) -> int | None:
    """The id a reply to ``line`` carries: the message's, if it is an object with an integer
    ``id`` (protocol.md: else null)."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def alive(cluster: Cluster) -> None:
    """A fresh connection is greeted and its ping answers."""
    with Wire(cluster.socket) as fresh:
        fresh.ping()


def daemon_pid(cluster: Cluster) -> int:
    with Wire(cluster.socket) as wire:
        return int(wire.hello["pid"])


def finish(cluster: Cluster, pid: int) -> None:
    alive(cluster)
    assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    _no_traceback(cluster)


# -- values --------------------------------------------------------------------------------------

MISSING = object()
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
#: Past every bound of the ops (256 characters of an id, 64 KiB of an answer), and one of
#: megabytes, below the line limit on its own.
HUGE = st.sampled_from(["x" * 257, "y" * (64 * 1024 + 1), "é" * 300_000, "\x01" * 100_000,
                        "z" * 8_500_000])
NAMES = st.sampled_from([*LIVE, "echo-9", "echo", "stubborn", "bash", "nosuch", "ECHO-1",
                         "echo-1 ", "../echo", "/etc/passwd", "a" * 256, "a" * 257])
CLEAN_TEXT = st.one_of(
    st.just(""),
    st.text(max_size=12),
    st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=8),  # control characters
    st.text(st.characters(min_codepoint=0x10000), min_size=1, max_size=6),  # beyond the BMP
)
#: A lone surrogate: valid JSON (``"\\ud800"``), not text; refused before any op sees it.
BAD_TEXT = st.builds(lambda a, s, b: a + s + b, st.text(max_size=4), SURROGATES,
                     st.text(max_size=4))
# (one_of has no weights: a branch given more than once is drawn more often)
SMALL_TEXT = st.one_of(CLEAN_TEXT, CLEAN_TEXT, CLEAN_TEXT, BAD_TEXT)
TEXT = st.one_of(SMALL_TEXT, SMALL_TEXT, HUGE, NAMES)
INTS = st.one_of(st.integers(), st.sampled_from(
    [0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)]))
FLOATS = st.one_of(st.floats(), st.sampled_from(
    [1e308, -1e308, -0.0, 5e-324, 0.5, float("nan"), float("inf"), float("-inf")]))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)


def _nest(depth: int, as_dict: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


def _trees(text: st.SearchStrategy[str], floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), INTS, floats, text)
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=8)


#: Any JSON the decoder takes.
CLEAN = _trees(st.one_of(CLEAN_TEXT, CLEAN_TEXT, HUGE, NAMES),
               st.floats(allow_nan=False, allow_infinity=False))
#: Any JSON at all, with what the decoder refuses: lone surrogates, NaN and Infinity, nesting
#: past MAX_DEPTH.
VALUES = st.one_of(CLEAN, _trees(TEXT, FLOATS), st.builds(_nest, st.integers(1, 40), st.booleans()))


def arg(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An argument: mostly a value the op could take, else any JSON (mostly decodable)."""
    return st.one_of(plausible, plausible, plausible, CLEAN, VALUES)


COUNT = st.sampled_from([0, 1, 2, 3, 256, 257, 1000, 1001, 10_000, 10_001, -1])
#: Values each argument an op reads could take (ops.py, attach.py, and the built-in cancel).
PLAUSIBLE: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "ping": {},
    "status": {},
    "send": {"prompt": st.text("abcdefgh xyz", min_size=1, max_size=30),
             "tool": st.sampled_from(["echo", "nosuch", "stubborn"]), "to": NAMES,
             "key": st.sampled_from(["k", "sticky-1"]),
             "timeout": st.sampled_from([0.001, 0.5, 5, 30, 1e308, 10**400, 0, -1]),
             "tags": st.sampled_from([[], ["a"], ["a"] * 65, [""], ["x" * 257]]),
             "no_wait": st.booleans()},
    "answer": {"id": NAMES, "keys": st.sampled_from(
        ["y", ["y", "enter"], [], ["k"] * 65, ["x" * (64 * 1024 + 1)], [1]])},
    "interrupt": {"id": NAMES},
    "drain": {"id": NAMES, "wait": st.booleans()},
    "scale": {"tool": st.sampled_from(["echo", "stubborn", "bash", "nosuch", "Echo"]),
              "count": COUNT},
    "restart": {"id": NAMES},
    "screen": {"id": NAMES, "lines": COUNT},
    "turns": {"id": NAMES, "limit": COUNT},
    "logs": {"id": NAMES, "lines": COUNT, "previous": st.sampled_from([0, 1, 3, 4, -1])},
    "usage": {},
    "events": {"since": st.sampled_from([0, 1, 2**63 - 1, 2**63, -1, 10**400]),
               "follow": st.booleans(), "instance": NAMES, "last": COUNT,
               "kinds": st.sampled_from([["state_changed"], "prompt_queued", ["nope"], [],
                                         ["state_changed"] * 65])},
    "attach": {"id": NAMES, "read_only": st.booleans(),
               "size": st.sampled_from([[24, 80], [10, 30], [0, 0], [1, 1], [10_000, 80],
                                        [24], "24x80"])},
    "cancel": {"id": INTS},
    "jobs_run": {"jobs": st.sampled_from([
        [], "x", [{"id": "j"}], [{"id": "j", "tool": "echo", "prompt": "hi", "cwd": "/tmp"}],
        [{"id": "j", "tool": "nosuch", "prompt": "p", "cwd": "/tmp"}],
        [{"id": "j", "tool": "echo", "prompt": "p"}], [{"id": "j", "tool": "echo",
                                                      "prompt": "p", "cwd": "/tmp"}] * 1001]),
        "mode": st.sampled_from(["auto", "pooled", "oneshot", "x"]), "instances": COUNT,
        "source": st.sampled_from(["jobs.yaml", "x" * 5000])},
    "jobs_cancel": {"run_id": NAMES},
    "jobs_get": {"run_id": NAMES},
    "plans_run": {"plan": st.sampled_from([
        {}, "x", {"plan_id": "p"}, {"plan_id": "p", "steps": []},
        {"plan_id": "p", "steps": [{"id": "a", "tool": "echo", "prompt": "hi"}]},
        {"plan_id": "p", "steps": [{"id": "a", "tool": "echo", "prompt": "hi",
                                    "depends_on": ["a"]}]}]),
        "repo": st.sampled_from(["/tmp", "relative", "", "/" + "x" * 5000]),
        "source": st.sampled_from(["plan.yaml", "x" * 5000]), "resume": NAMES,
        "max_concurrency": COUNT, "keep_worktrees": st.sampled_from([True, False, "yes"])},
    "plans_cancel": {"run_id": NAMES},
    "plans_get": {"run_id": NAMES},
    "group": {"tool": st.sampled_from(["echo", "nosuch", "/etc/passwd", "Echo"]),
              "cwd": st.sampled_from(["/tmp", "relative", "", "/nonexistent", "/" + "x" * 5000]),
              "count": COUNT,
              "env": st.sampled_from([{}, {"A": "1"}, {"1A": "x"}, {"A": "x" * 5000}, []]),
              "args": st.sampled_from([[], ["-x"], "x", [1], ["a"] * 65])},
}
#: The same arguments, with any JSON at all as well.
ARGS = {op: {name: arg(pick) for name, pick in names.items()} for op, names in PLAUSIBLE.items()}
#: What a client may send to an open stream (attach reads data, resize and detach).
INPUTS = st.one_of(
    st.fixed_dictionaries({}, optional={
        "data": arg(st.sampled_from([base64.b64encode(b"ls").decode(), "%%%", ""])),
        "resize": arg(st.sampled_from([[24, 80], [5, 20], [0, 1]])),
        "detach": arg(st.booleans())}),
    st.dictionaries(SMALL_TEXT, VALUES, max_size=3))


def args_of(op: str) -> st.SearchStrategy[dict[str, Any]]:
    """Each argument the op reads present or not (with, one time in three, only values it
    could take: most requests then get far enough to do something), plus ones it does not
    know."""
    def present(pick: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(pick, pick, pick, st.just(MISSING))

    def drawn(strategies: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({name: present(pick) for name, pick in strategies.items()}
                                     ).map(lambda d: {k: v for k, v in d.items() if v is not MISSING})

    known = st.one_of(drawn(PLAUSIBLE[op]), drawn(ARGS[op]), drawn(ARGS[op]))
    unknown = st.one_of(st.just({}), st.just({}), st.dictionaries(CLEAN_TEXT, CLEAN, max_size=2),
                        st.dictionaries(SMALL_TEXT, VALUES, max_size=2))
    return st.builds(lambda u, k: {**u, **k}, unknown, known)


def tame(op: str, args: dict[str, Any], cancel: bool) -> dict[str, Any]:
    """The same request, made harmless to the one cluster that serves the whole run."""
    args = dict(args)
    if op == "drain" and args.get("id") in LIVE:
        args["id"] = "echo-9"  # (a drained instance is gone for the rest of the run)
    if op == "scale":
        tool, count = args.get("tool"), args.get("count")
        if (isinstance(tool, str) and re.fullmatch(NAME_PATTERN, tool)
                and type(count) is int and 0 <= count <= 256):
            # Echo stays at its two; any other adapter gets an empty group (or is unknown).
            args["count"] = 2 if tool == "echo" else 0
    if op == "jobs_run" and isinstance(args.get("jobs"), list):
        # Checked, then refused for want of a tool: no run starts on the shared cluster.
        args["jobs"] = [{**j, "tool": "nosuch"} if isinstance(j, dict) else j
                        for j in args["jobs"]]
    if op == "plans_run" and isinstance(args.get("plan"), dict):
        # Checked, then refused for want of a tool: no plan runs on the shared cluster.
        steps = args["plan"].get("steps")
        if isinstance(steps, list):
            args["plan"] = {**args["plan"], "steps": [
                {**st_, "tool": "nosuch"} if isinstance(st_, dict) else st_ for st_ in steps]}
    if op == "send":
        prompt = args.get("prompt")
        if isinstance(prompt, str) and prompt:
            if not (len(prompt) <= 64 and prompt.isascii() and prompt.isprintable()):
                # Checked and recorded, then refused for want of a tool: no instance types it.
                args["tool"] = "nosuch"
                args.pop("to", None)
            elif not cancel:
                args["no_wait"] = True  # real work, but nobody waits on it
    return args


def request_line(rid: int, op: str, args: dict[str, Any], ascii_only: bool) -> bytes:
    text = json.dumps({"v": 1, "id": rid, "op": op, "args": args}, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass") + b"\n"


def collect(wire: Wire, want: set[int], done: Callable[[list[dict[str, Any]]], bool],
            seen: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Messages until ``done(seen)`` says all are in; each must be for an id in ``want``."""
    seen = list(seen or [])
    while not done(seen):
        msg = wire.read()
        assert msg is not None, "the connection closed"
        assert msg.get("id") in want, f"a message for no request: {_cut(msg)}"
        seen.append(msg)
    return seen


def started(wire: Wire, rid: int) -> list[dict[str, Any]]:
    """The messages for ``rid`` that come before the reply to a ping sent after it. By then
    the request's task has taken its first step (tasks start in the order they were made),
    so a cancel sent from here on finds it running. (A request cancelled before that gets
    no reply at all: test_a_request_cancelled_at_once_is_answered.)"""
    ping = next(Wire._ids)
    wire.send_msg({"v": 1, "id": ping, "op": "ping"})
    seen = collect(wire, {rid, ping}, lambda got: any(m["id"] == ping for m in got))
    assert seen[-1]["ok"] is True, _cut(seen[-1])
    return seen[:-1]


# -- every op, every argument ---------------------------------------------------------------------

def test_every_op_with_fuzzed_arguments(cluster: Cluster) -> None:
    up(cluster)
    pid = daemon_pid(cluster)
    wire = Wire(cluster.socket)
    hello = wire.hello
    plain, streams = set(hello["ops"]), set(hello["streams"])
    ops = sorted((plain | streams) - NEVER)
    assert set(ops) <= set(ARGS), f"ops with no argument strategies here: {set(ops) - set(ARGS)}"
    assert "cancel" in plain and streams
    conn = {"wire": wire}

    @FUZZ
    @given(data=st.data(), op=st.sampled_from(ops), rid=st.integers(-(2**70), 2**70),
           ascii_only=st.booleans(), cancel=st.booleans())
    def run(data: st.DataObject, op: str, rid: int, ascii_only: bool, cancel: bool) -> None:
        if op == "cancel":
            cancel = False  # (a cancel of a cancel says nothing more)
        args = tame(op, data.draw(args_of(op), label="args"), cancel or op in streams)
        line = request_line(rid, op, args, ascii_only)
        assume(len(line) <= MAX_LINE)
        # Everything drawn before anything is sent, so a replay draws the same.
        inputs: list[bytes] = []
        close = False
        if op in streams:
            inputs = [json.dumps({"v": 1, "id": rid, "input": payload}).encode() + b"\n"
                      for payload in data.draw(st.lists(INPUTS, max_size=3), label="inputs")]
            assume(all(len(each) <= MAX_LINE for each in inputs))
            close = data.draw(st.booleans(), label="close instead of cancel")
        note(f"sent: {_cut(line, 2000)}")
        try:
            exchange(op, rid, line, cancel, inputs, close)
        except BaseException:
            conn["wire"].close()  # what is still due on it would answer the next example
            conn["wire"] = Wire(cluster.socket)
            raise

    def exchange(op: str, rid: int, line: bytes, cancel: bool, inputs: list[bytes],
                 close: bool) -> None:
        w = conn["wire"]
        w.send(line)
        if op in streams:
            for each in inputs:
                w.send(each)
            if close:
                w.close()  # a client that goes away mid-stream
                conn["wire"] = Wire(cluster.socket)
                alive(cluster)
                return
            check_stream(w, rid, len(inputs))
        else:
            check_plain(w, rid, cancel)
        w.ping()
        alive(cluster)

    try:
        run()
    finally:
        conn["wire"].close()
    finish(cluster, pid)


def check_plain(wire: Wire, rid: int, cancel: bool) -> None:
    """One reply for ``rid`` (and one for its cancel, if it was cancelled)."""
    cid = rid + 1
    want = {rid, cid} if cancel else {rid}
    early = []
    if cancel:
        early = started(wire, rid)
        wire.send_msg({"v": 1, "id": cid, "op": "cancel", "args": {"id": rid}})
    got = collect(wire, want, lambda seen: len(seen) == len(want), early)
    assert sorted(m["id"] for m in got) == sorted(want), [_cut(m) for m in got]
    for msg in got:
        check_reply(msg, msg["id"])
        if msg["id"] == cid and cancel:
            assert msg["ok"] is True and isinstance(msg["result"]["cancelled"], bool)


def check_stream(wire: Wire, rid: int, inputs: int) -> None:
    """Cancel stream ``rid``: items, then exactly one end (or error), and the cancel's reply.

    An input line that is not protocol (or came after the stream had ended) gets its own
    bad_request with the stream's id. Those replies were made when their lines were read, so
    they come before the cancel's reply. A stream still running when the cancel came ends
    with ``cancelled``, before or after the cancel's reply."""
    cid = rid + 1
    early = started(wire, rid)
    wire.send_msg({"v": 1, "id": cid, "op": "cancel", "args": {"id": rid}})

    def last(m: dict[str, Any]) -> bool:
        return m["id"] == rid and ("end" in m or m.get("ok") is False)

    def done(seen: list[dict[str, Any]]) -> bool:
        at = next((i for i, m in enumerate(seen) if m["id"] == cid), None)
        if at is None:
            return False
        return seen[at]["result"]["cancelled"] is False or any("end" in m for m in seen)

    got = collect(wire, {rid, cid}, done, early)
    at = next(i for i, m in enumerate(got) if m["id"] == cid)
    check_reply(got[at], cid)
    before, after = got[:at], got[at + 1:]
    for msg in got:
        if "end" in msg:
            assert msg["end"] is True, _cut(msg)
        elif "item" not in msg and msg is not got[at]:
            check_reply(msg, rid)
    ends = [m for m in got if "end" in m]
    errors = [m for m in before if m.get("ok") is False]
    assert len(ends) <= 1, [_cut(m) for m in got]
    refused = errors  # answers to input lines: all bad_request
    if got[at]["result"]["cancelled"]:
        # Running when the cancel came: what failed were inputs, and it ends cancelled.
        assert len(ends) == 1 and ends[0].get("cancelled") is True, [_cut(m) for m in got]
        assert not any("item" in m for m in got[got.index(ends[0]) + 1:]), "item after end"
        assert all("end" in m for m in after if m["id"] == rid), [_cut(m) for m in after]
    else:
        assert not after and (ends or errors), [_cut(m) for m in got]
        if ends:
            assert not any("item" in m for m in got[got.index(ends[0]) + 1:]), "item after end"
        else:  # it failed: one of the errors is its own, of any code
            own = [m for m in errors if m["error"]["code"] != "bad_request"] or errors[:1]
            assert len(own) == 1, [_cut(m) for m in got]
            refused = [m for m in errors if m is not own[0]]
    assert len(refused) <= inputs, [_cut(m) for m in got]
    assert all(m["error"]["code"] == "bad_request" for m in refused), [_cut(m) for m in got]


# -- envelopes and bytes --------------------------------------------------------------------------

def envelopes(safe_ops: list[str], other_ops: set[str]) -> st.SearchStrategy[bytes]:
    """A message whose every field may be missing, mistyped or out of range."""
    fields = {
        "v": st.one_of(st.just(1), st.just(1), st.just(1),
                       st.sampled_from([2, 0, -1, "1", None, 1.0, True, [1]]), CLEAN, VALUES),
        "id": st.one_of(INTS, INTS, INTS, st.sampled_from([True, 1.0, "1", None, [1]]), CLEAN,
                        VALUES),
        "op": st.one_of(st.sampled_from(safe_ops), st.sampled_from(
            ["frob", "", "PING", "ping ", "__init__", "_call", "plain", "x" * 8_500_000]),
            CLEAN_TEXT, CLEAN, TEXT, VALUES),
        "args": st.one_of(st.dictionaries(CLEAN_TEXT, CLEAN, max_size=3),
                          st.dictionaries(SMALL_TEXT, VALUES, max_size=3), CLEAN, VALUES),
        "input": st.one_of(INPUTS, CLEAN, VALUES),
        "extra": st.one_of(CLEAN, CLEAN, VALUES),
    }

    def build(draw: st.DrawFn) -> bytes:
        msg: dict[str, Any] = {}
        for name, strategy in fields.items():
            keep = draw(st.integers(0, 3)) > 0 if name != "input" else draw(st.integers(0, 4)) == 0
            if keep:
                msg["unknown" if name == "extra" else name] = draw(strategy)
        if isinstance(msg.get("op"), str) and msg["op"] in other_ops:
            msg["op"] += "?"  # (those ops are fuzzed, tamed, by the test above)
        text = json.dumps(msg, ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 5)) == 0:
            # A duplicate key: JSON allows it, the last one counts.
            key = draw(st.sampled_from(["v", "id", "op", "args"]))
            value = json.dumps(draw(st.one_of(INTS, SCALARS)))
            text = text.replace("{", f'{{"{key}": {value}, ', 1) if len(text) > 2 else text
        return text.encode("utf-8", "surrogatepass")

    return st.composite(build)()


JUNK = st.one_of(
    st.sampled_from([
        b"", b" ", b"\r", b"\t \t", b"{", b"}", b"[]", b"null", b"1", b'"text"', b"hello?",
        b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80",
        b'{"v":1,"id":1,"op":"ping"} {}', b'{"v":1,"id":2,"op":"ping"}{"v":1}',
        b'{"v":1,"id":3,"op":"ping","args":{"x":NaN}}',
        b'{"v":1,"id":4,"op":"ping","args":{"x":-Infinity}}',
        b'{"v":1,"id":5,"op":"ping","args":{"x":1e400}}',
        b'{"v":1,"id":6,"op":"ping","args":{"x":' + b"9" * 5000 + b"}}",
        b'{"v":1,"id":7,"op":"ping","args":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"v":1,"id":8,"op":"ping","args":{"x":"\\ud800"}}',
        b'{"v":1,"id":9,"op":"ping","args":{"\\udfff":1}}',
        b'{"v":1,"id":10,"op":"ping","args":{"x":"\\u0000"}}',
        b'{"v":1,"id":11,"op":"cancel","args":{"id":true}}',
        b'{"v":1,"id":12,"op":"cancel"}',
        b'{"v":1,"id":13,"input":{}}', b'{"v":1,"id":14,"input":[]}',
        b'{"v":1,"id":15}', b'{"v":1,"op":"ping"}', b'{"id":16,"op":"ping"}',
        b'{"v":1,"id":17,"op":"ping","args":null}', b'{"v":1,"id":18,"op":"ping","args":[]}',
    ]),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.builds(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"), VALUES),  # any JSON
)


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A message cut short, or with bytes that are not UTF-8 in it."""
    bad = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\x00"])

    def build(draw: st.DrawFn) -> bytes:
        line = draw(valid)
        at = draw(st.integers(0, len(line)))
        if draw(st.booleans()):
            return line[:at]
        return line[:at] + draw(bad) + line[at:]

    return st.composite(build)()


def test_malformed_envelopes_and_bytes(cluster: Cluster) -> None:
    up(cluster)
    pid = daemon_pid(cluster)
    wire = Wire(cluster.socket)
    everything = set(wire.hello["ops"]) | set(wire.hello["streams"])
    conn = {"wire": wire}
    safe = ["cancel", "ping", "status"]
    assert set(safe) <= everything
    valid = st.builds(lambda rid: json.dumps({"v": 1, "id": rid, "op": "ping"}).encode(), INTS)
    fields = envelopes(safe, everything - set(safe))
    # Framed right, with an op that may not exist and any arguments (those ops ignore theirs).
    framed = st.builds(
        lambda rid, op, args, extra: json.dumps(
            {"v": 1, "id": rid, "op": op + "?" if op in everything - set(safe) else op,
             **args, **extra}).encode(),
        INTS, st.one_of(st.sampled_from(safe), CLEAN_TEXT, HUGE),
        st.one_of(st.just({}), st.fixed_dictionaries({"args": st.one_of(
            st.none(), st.dictionaries(CLEAN_TEXT, CLEAN, max_size=3))})),
        st.dictionaries(st.sampled_from(["x", "ok", "result", "end", "item", "error"]), CLEAN,
                        max_size=2))
    lines = st.one_of(fields, fields, framed, framed, JUNK, mutated(valid), mutated(fields))

    @FUZZ
    @given(batch=st.lists(lines, min_size=1, max_size=4))
    def run(batch: list[bytes]) -> None:
        data = b"".join(line + b"\n" for line in batch)
        assume(max(len(line) + 1 for line in batch) <= MAX_LINE and len(data) < 2 * MAX_LINE)
        note(f"sent: {[_cut(line, 1000) for line in batch]}")
        try:
            exchange(batch, data)
        except BaseException:
            conn["wire"].close()
            conn["wire"] = Wire(cluster.socket)
            raise

    def exchange(batch: list[bytes], data: bytes) -> None:
        wire = conn["wire"]
        # Every line is answered, by the id it carries (or null): all at once, in any order.
        wire.send(data)
        want = Counter(guessed_id(line) for line in batch)
        got = []
        for _ in batch:
            msg = wire.read()
            assert msg is not None, "the connection closed"
            assert "item" not in msg and "end" not in msg, _cut(msg)
            got.append(msg)
        assert Counter(m["id"] for m in got) == want, ([_cut(line, 200) for line in batch],
                                                       [_cut(m) for m in got])
        for msg in got:
            check_reply(msg, msg["id"])
        wire.ping()
        alive(cluster)

    try:
        run()
        # A line cut short by a client that then goes away gets nothing, and costs nothing.
        with Wire(cluster.socket) as gone:
            gone.send(b'{"v":1,"id":1,"op":"pi')
    finally:
        conn["wire"].close()
    finish(cluster, pid)


# -- one at a time: what is too costly to fuzz ------------------------------------------------------

def test_oversized_lines_close_and_ids_in_use_are_refused(cluster: Cluster) -> None:
    up(cluster)
    pid = daemon_pid(cluster)
    # A line one byte over the limit, newline included: one bad_request without an id, then
    # the server hangs up (protocol.md). Written from a thread: the server stops reading.
    head = b'{"v":1,"id":1,"op":"ping","args":{"x":"'
    tail = b'"}}\n'
    for size in (MAX_LINE + 1, MAX_LINE + 4 * 1024 * 1024):
        line = head + b"x" * (size - len(head) - len(tail)) + tail
        assert len(line) == size
        with Wire(cluster.socket) as wire:
            writer = threading.Thread(target=_send_quietly, args=(wire.sock, line), daemon=True)
            writer.start()
            reply = wire.read()
            assert reply is not None, f"no reply to a line of {size} bytes"
            assert reply["id"] is None and reply["ok"] is False, _cut(reply)
            assert reply["error"]["code"] == "bad_request", _cut(reply)
            check_error(reply["error"])
            assert _at_end(wire), f"the connection stayed open after a line of {size} bytes"
            writer.join(TIMEOUT)
        alive(cluster)
    # The longest line there may be is taken as a message (here: a ping).
    line = head + b"x" * (MAX_LINE - len(head) - len(tail)) + tail
    with Wire(cluster.socket) as wire:
        wire.send(line)
        reply = wire.read()
        assert reply is not None and reply["id"] == 1 and reply["ok"] is True, _cut(reply)
        wire.ping()

    # A prompt that fits the line but whose event would not: refused, so the history stays
    # readable. One within the bound is recorded, and read back.
    with Wire(cluster.socket) as wire:
        for rid, prompt, code in [(2, "\x01" * (MAX_LINE // 6 - 100), "bad_request"),
                                  (3, "x" * (MAX_PROMPT - 2), "no_such_tool")]:
            wire.send_msg({"v": 1, "id": rid, "op": "send",
                           "args": {"prompt": prompt, "tool": "nosuch"}})
            reply = wire.read()
            assert reply is not None and reply["error"]["code"] == code, _cut(reply)
            check_error(reply["error"])
        wire.send_msg({"v": 1, "id": 4, "op": "events", "args": {"kinds": ["prompt_queued"]}})
        items = 0
        while (msg := wire.read()) is not None and "item" in msg:
            items += 1
        assert msg is not None and msg.get("end") is True and items == 1, _cut(msg)

    # An id still running is refused whatever the request; its own stream goes on.
    with Wire(cluster.socket) as wire:
        wire.send_msg({"v": 1, "id": 7, "op": "events",
                       "args": {"since": 2**63 - 1, "follow": True}})
        wire.ping()  # the stream is open (and has nothing to say)
        for op, args in [("ping", {}), ("status", {}), ("send", {"prompt": "p"}),
                         ("events", {}), ("frob", {}), ("attach", {"id": "echo-1"})]:
            wire.send_msg({"v": 1, "id": 7, "op": op, "args": args})
            reply = wire.read()
            assert reply is not None and reply["id"] == 7 and reply["ok"] is False, reply
            assert reply["error"]["code"] == "bad_request", reply
            assert "already in use" in reply["error"]["message"]
        wire.send_msg({"v": 1, "id": 8, "op": "cancel", "args": {"id": 7}})
        got = {(m["id"], "end" in m) for m in (wire.read(), wire.read()) if m is not None}
        assert got == {(7, True), (8, False)}, got
        wire.ping()
    finish(cluster, pid)


def test_the_decoder_takes_only_what_an_encoder_could_send() -> None:
    """What the fuzzing found in the decoder, pinned: non-finite numbers (the encoders refuse
    them, and an op would compute with NaN) and text that is not UTF-8."""
    for line in [b'{"v":1,"x":NaN}', b'{"v":1,"x":-Infinity}', b'{"v":1,"x":1e400}',
                 '{"v":1}'.encode("utf-16"), b'{"v":1,"x":"\xff"}']:
        with pytest.raises(ProtocolError, match="not valid JSON"):
            decode(line)
    assert decode(b'{"v":1,"x":1e308,"y":-0.0,"z":' + b"9" * 400 + b"}")["x"] == 1e308


def test_an_error_reply_fits_a_line_whatever_it_echoes() -> None:
    """An unknown op of megabytes (or any error carrying a big value) is answered in a short
    line, not in one past MAX_LINE that could not be sent at all."""
    for exc in [UnknownOp("x" * 9_000_000, ["ping"]), UnsupportedVersion(["v"] * 3_000_000),
                ProtocolError("y" * 9_000_000)]:
        line = encode(error_reply(7, exc))
        assert len(line) < 2 * MAX_ERROR_TEXT + 4096, len(line)
        error = json.loads(line)["error"]
        check_error(error)
        assert error["code"] == exc.code


def test_a_request_cancelled_at_once_is_answered(cluster: Cluster) -> None:
    up(cluster)
    with Wire(cluster.socket) as wire:
        # Request and cancel in one write: both are read, and dispatched, in one pass.
        wire.send(b'{"v":1,"id":1,"op":"status"}\n{"v":1,"id":2,"op":"cancel","args":{"id":1}}\n'
                  b'{"v":1,"id":3,"op":"events","args":{"since":0,"follow":true}}\n'
                  b'{"v":1,"id":4,"op":"cancel","args":{"id":3}}\n')
        wire.sock.settimeout(3)
        last: dict[int, dict[str, Any]] = {}
        while len(last) < 4 or "item" in last[3]:
            msg = wire.read()
            assert msg is not None
            last[msg["id"]] = msg
        check_reply(last[1], 1)  # done, or cancelled: either way, answered
        assert last[3].get("end") is True or last[3]["ok"] is False, last[3]


def test_a_request_cancelled_while_its_reply_waits_is_answered(cluster: Cluster) -> None:
    up(cluster)
    with Wire(cluster.socket) as wire:
        wire.send_msg({"v": 1, "id": 1, "op": "send",
                       "args": {"prompt": "x" * (MAX_PROMPT // 2), "tool": "nosuch"}})
        assert (reply := wire.read()) is not None and reply["id"] == 1
        # A stream whose first items outgrow the socket's buffers, not read yet: the server
        # waits in the middle of writing, holding the connection's write lock.
        wire.send_msg({"v": 1, "id": 2, "op": "events", "args": {"since": 0}})
        time.sleep(0.3)
        wire.send_msg({"v": 1, "id": 3, "op": "status"})  # done at once; its reply waits
        time.sleep(0.3)
        wire.send_msg({"v": 1, "id": 4, "op": "cancel", "args": {"id": 3}})
        wire.sock.settimeout(3)
        last: dict[int, dict[str, Any]] = {}
        while 3 not in last or 4 not in last or "end" not in last.get(2, {}):
            msg = wire.read()
            assert msg is not None
            last[msg["id"]] = msg
        check_reply(last[3], 3)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server hung up before it had read all of it, as it should


def _at_end(wire: Wire) -> bool:
    try:
        return wire.file.readline() == b""
    except ConnectionResetError:
        return True



def test_bad_input_for_an_open_stream_is_an_item_and_the_stream_goes_on(
        cluster: Cluster) -> None:
    up(cluster)
    with Wire(cluster.socket) as wire:
        wire.send_msg({"v": 1, "id": 5, "op": "events", "args": {"since": 0, "follow": True}})
        wire.send(b'{"v":1,"id":5,"input":{"x":"\\ud800"}}\n')
        wire.sock.settimeout(10)
        while True:
            msg = wire.read()
            assert msg is not None and msg["id"] == 5, msg
            assert "ok" not in msg or msg.get("item"), msg  # never an error reply for id 5
            item = msg.get("item") or {}
            if "error" in item:
                assert item["error"]["code"] == "bad_request", item
                break
        wire.send_msg({"v": 1, "id": 6, "op": "ping"})
        while (msg := wire.read()) is not None and msg["id"] != 6:
            assert msg["id"] == 5 and "end" not in msg, msg  # the stream is still open
        assert msg is not None and msg["ok"] is True
