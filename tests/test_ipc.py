"""The control socket: the wire format and its errors, a real server on a temporary socket
driven by the blocking and the asyncio client, streams, cancel, and socket hygiene."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aimterm.errors import (
    AimtermError,
    AlreadyRunning,
    ConfigError,
    ConnectionLost,
    DaemonNotRunning,
    IpcTimeout,
    NotReady,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    SessionError,
    UnknownInstance,
    UnknownOp,
    UnsafeRuntimeDir,
    UnsupportedVersion,
)
from aimterm.ipc import protocol
from aimterm.ipc.client import AsyncControlClient, ControlClient
from aimterm.ipc.protocol import MAX_LINE, decode, encode, error_from_wire, error_to_wire
from aimterm.ipc.server import ControlServer, Stream
from aimterm.version import __version__

# -- a server with a few ops ---------------------------------------------------------------------


class Ops:
    """The ops of the test server, with hooks that show what happened on the server side."""

    def __init__(self) -> None:
        self.stream_cancelled = threading.Event()
        self.call_cancelled = threading.Event()

    async def ping(self, args: dict[str, Any]) -> str:
        return "pong"

    async def echo(self, args: dict[str, Any]) -> dict[str, Any]:
        return args

    async def fail(self, args: dict[str, Any]) -> None:
        raise UnknownInstance(args.get("name", "ghost"), known=["a", "b"])

    async def crash(self, args: dict[str, Any]) -> None:
        raise ValueError("secret detail of the crash")

    async def sleep(self, args: dict[str, Any]) -> str:
        try:
            await asyncio.sleep(args["s"])
        except asyncio.CancelledError:
            self.call_cancelled.set()
            raise
        return "slept"

    async def count(self, args: dict[str, Any], stream: Stream) -> None:
        for i in range(args["n"]):
            await stream.send({"i": i})

    async def forever(self, args: dict[str, Any], stream: Stream) -> None:
        i = 0
        try:
            while True:
                await stream.send({"i": i})
                i += 1
                await asyncio.sleep(0.005)
        finally:
            if stream.cancelled.is_set():
                self.stream_cancelled.set()

    async def echo_inputs(self, args: dict[str, Any], stream: Stream) -> None:
        while True:
            data = await stream.inputs.get()
            if data.get("stop"):
                return
            await stream.send({"got": data})

    def server(self, path: Path) -> ControlServer:
        return ControlServer(path, {"ping": self.ping, "echo": self.echo, "fail": self.fail,
                                    "crash": self.crash, "sleep": self.sleep},
                             streaming={"count": self.count, "forever": self.forever,
                                        "echo_inputs": self.echo_inputs})


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Not tmp_path: a Unix socket path must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="aimt-", dir="/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ops() -> Ops:
    return Ops()


@pytest.fixture
def served(sock_dir: Path, ops: Ops) -> Iterator[Path]:
    path = sock_dir / "run" / "control.sock"
    server = ops.server(path)
    server.start()
    try:
        yield path
    finally:
        server.stop()
    assert not path.exists(), "stop() must remove the socket file"


@pytest.fixture
def client(served: Path) -> Iterator[ControlClient]:
    with ControlClient(served, timeout=5.0) as c:
        yield c


class RawConn:
    """A bare socket speaking the protocol by hand, for what the clients would never send."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5.0)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> dict[str, Any]:
        line = self.file.readline()
        assert line.endswith(b"\n"), f"connection closed (got {line!r})"
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw(served: Path) -> Iterator[RawConn]:
    conn = RawConn(served)
    try:
        yield conn
    finally:
        conn.close()


# -- protocol ------------------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    msg = {"v": 1, "id": 7, "op": "echo", "args": {"text": "héllo\nworld ✓"}}
    line = encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == msg
    assert decode(line.decode()) == msg
    with pytest.raises(ValueError):
        encode({"v": 1, "x": float("nan")})
    with pytest.raises(TypeError):
        encode({"v": 1, "x": object()})


@pytest.mark.parametrize(("line", "code"), [
    (b"not json\n", "bad_request"),
    (b"[1, 2]\n", "bad_request"),
    (b'{"id": 1, "op": "ping"}\n', "bad_request"),
    (b'\xff\xfe{}\n', "bad_request"),
    (b'{"v": 2, "id": 1, "op": "ping"}\n', "unsupported_version"),
    (b'{"v": true, "id": 1, "op": "ping"}\n', "unsupported_version"),
])
def test_decode_errors(line: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(line)
    assert info.value.code == code


def test_decode_refuses_oversized_lines() -> None:
    with pytest.raises(ProtocolError, match="limit"):
        decode(b'"' + b"x" * MAX_LINE + b'"')
    with pytest.raises(ProtocolError, match="limit"):
        encode({"v": 1, "blob": "x" * MAX_LINE})


@pytest.mark.parametrize(("msg", "match"), [
    ({"v": 1, "op": "ping"}, "integer 'id'"),
    ({"v": 1, "id": True, "op": "ping"}, "integer 'id'"),
    ({"v": 1, "id": 1}, "'op'"),
    ({"v": 1, "id": 1, "op": "ping", "args": [1]}, "must be a JSON object"),
    ({"v": 1, "id": 1, "op": "cancel", "args": {}}, "cancel needs"),
    ({"v": 1, "id": 1, "input": "text"}, "'input' must be"),
])
def test_parse_request_errors(msg: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        protocol.parse_request(msg)
    assert info.value.code == "bad_request"


def test_parse_request() -> None:
    req = protocol.parse_request({"v": 1, "id": 3, "op": "echo"})
    assert (req.id, req.op, req.args, req.input) == (3, "echo", {}, None)
    inp = protocol.parse_request({"v": 1, "id": 3, "input": {"keys": "x"}})
    assert (inp.id, inp.op, inp.input) == (3, None, {"keys": "x"})


def _all_error_classes() -> list[type[AimtermError]]:
    protocol.error_class("load the registry")  # imports the modules that define errors

    def walk(cls: type[AimtermError]) -> list[type[AimtermError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    return [c for c in walk(AimtermError)
            if c.__module__.startswith("aimterm.") and c not in (AimtermError, RemoteError)]


def test_error_codes_are_unique() -> None:
    seen: dict[str, str] = {}
    for cls in _all_error_classes():
        assert cls.code not in seen, f"{cls.__name__} reuses {cls.code!r} of {seen[cls.code]}"
        seen[cls.code] = cls.__name__
    for code in ("bad_request", "unknown_op", "unsupported_version", "permission_denied",
                 "unsafe_runtime_dir", "already_running", "daemon_not_running",
                 "connection_lost", "ipc_timeout", "cancelled", "store_error",
                 "not_ready", "no_such_tool", "unknown_instance"):
        assert code in seen


def _sample(cls: type[AimtermError]) -> AimtermError:
    """An instance of ``cls`` built through its own constructor, with some context."""
    from aimterm import router
    from aimterm.errors import (
        AdapterNotFound,
        DaemonNotRunning,
        IpcTimeout,
        LimitExceeded,
        SpawnError,
        UnsafeRuntimeDir,
    )

    special: dict[type[AimtermError], Any] = {
        AdapterNotFound: lambda: AdapterNotFound("nope", ["/a", "/b"]),
        SpawnError: lambda: SpawnError(["tool", "-x"], "not found"),
        UnknownInstance: lambda: UnknownInstance("i9", ["i1"]),
        UnknownOp: lambda: UnknownOp("frob", ["ping"]),
        UnsupportedVersion: lambda: UnsupportedVersion(7),
        UnsafeRuntimeDir: lambda: UnsafeRuntimeDir("/run/x", 0o777, "too open"),
        AlreadyRunning: lambda: AlreadyRunning("/run/x.sock"),
        DaemonNotRunning: lambda: DaemonNotRunning("/run/x.sock"),
        IpcTimeout: lambda: IpcTimeout("ping", 1.5),
        router.NoSuchTool: lambda: router.NoSuchTool("claude", ["fast"], available=["bash"]),
        router.NobodyFree: lambda: router.NobodyFree("claude", matching=2),
        router.QueueFull: lambda: router.QueueFull(10),
        router.QueueTimeout: lambda: router.QueueTimeout(3.0, tool="claude"),
        LimitExceeded: lambda: LimitExceeded("instances in the cluster", 300, 256),
    }
    if cls in special:
        made: AimtermError = special[cls]()
        return made
    if issubclass(cls, SessionError):
        return cls("it went wrong", instance="i1", adapter="demo", state="busy",
                   screen_tail=["> last line"])
    try:
        return cls(f"a {cls.__name__} happened")
    except TypeError:  # a class with its own constructor and no sample yet
        bare = cls.__new__(cls)
        AimtermError.__init__(bare, f"a {cls.__name__} happened")
        return bare


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda c: c.code)
def test_every_error_code_crosses_the_wire(cls: type[AimtermError]) -> None:
    sent = _sample(cls)
    wire = json.loads(json.dumps(error_to_wire(sent)))
    assert wire["code"] == cls.code and wire["expected"] is True
    assert wire["exit_code"] == cls.exit_code and wire["message"] == str(sent)
    back = error_from_wire(wire)
    assert type(back) is cls
    assert (back.code, back.exit_code, str(back)) == (cls.code, cls.exit_code, str(sent))
    for key, value in vars(sent).items():  # the context comes back as attributes
        if not key.startswith("_"):
            assert json.loads(json.dumps(getattr(back, key))) == json.loads(
                json.dumps(value, default=str)), key


def test_errors_keep_their_context() -> None:
    err = NotReady("busy with a turn", instance="i3", adapter="demo", state="busy",
                   screen_tail=["> working"])
    back = error_from_wire(json.loads(json.dumps(error_to_wire(err))))
    assert isinstance(back, NotReady) and isinstance(back, SessionError)
    assert (back.instance, back.adapter, back.state, back.screen_tail) == (
        "i3", "demo", "busy", ["> working"])
    assert str(back) == str(err) and back.exit_code == 6

    unsafe = error_from_wire(error_to_wire(UnsafeRuntimeDir("/tmp/x", 0o755, "too open")))
    assert isinstance(unsafe, UnsafeRuntimeDir) and unsafe.mode == 0o755
    assert "/tmp/x" in str(unsafe) and "0755" in str(unsafe)


def test_unknown_code_becomes_remote_error() -> None:
    back = error_from_wire({"code": "from_the_future", "message": "new error", "exit_code": 42,
                            "expected": True, "detail": 1})
    assert isinstance(back, RemoteError)
    assert (back.code, back.exit_code, str(back), back.extra) == (
        "from_the_future", 42, "new error", {"detail": 1})
    assert back.to_dict() == {"code": "from_the_future", "message": "new error", "detail": 1}


def test_a_crash_is_internal_without_traceback() -> None:
    try:
        raise ValueError("secret detail")
    except ValueError as exc:
        wire = error_to_wire(exc)
    assert wire["code"] == "internal" and wire["expected"] is False
    assert "Traceback" not in wire["message"] and "secret" not in wire["message"]
    back = error_from_wire(wire)
    assert isinstance(back, RemoteError) and back.code == "internal" and not back.expected


def test_hello_shape() -> None:
    msg = protocol.hello(pid=123)
    assert msg == {"v": 1, "hello": {"server": "aimterm", "version": __version__,
                                     "protocol": 1, "pid": 123}}


# -- the server with the blocking client ---------------------------------------------------------


def test_hello_and_simple_calls(client: ControlClient) -> None:
    hello = client.hello
    assert (hello["server"], hello["version"], hello["protocol"], hello["pid"]) == (
        "aimterm", __version__, 1, os.getpid())
    assert hello["ops"] == ["cancel", "crash", "echo", "fail", "ping", "sleep"]
    assert hello["streams"] == ["count", "echo_inputs", "forever"]
    assert client.call("ping") == "pong"
    assert client.call("echo", text="ü", n=[1, {"x": None}]) == {"text": "ü", "n": [1, {"x": None}]}
    # Arguments named like the client's own parameters still reach the op.
    assert client.request("echo", {"op": 1, "timeout": 2}) == {"op": 1, "timeout": 2}


def test_expected_error(client: ControlClient) -> None:
    with pytest.raises(UnknownInstance) as info:
        client.call("fail", name="i9")
    err = info.value
    assert err.code == "unknown_instance" and err.exit_code == 16 and err.instance == "i9"
    assert "no instance named 'i9'" in str(err)


def test_crash_is_internal_and_logged(client: ControlClient,
                                      caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RemoteError) as info:
        client.call("crash")
    err = info.value
    assert err.code == "internal" and err.expected is False and err.exit_code == 1
    assert "Traceback" not in str(err) and "secret" not in str(err)
    assert "secret detail of the crash" in caplog.text  # the server logged the traceback
    assert "Traceback" in caplog.text
    assert client.call("ping") == "pong"  # the connection survives


def test_unknown_op_is_not_exposed(client: ControlClient) -> None:
    for name in ("nope", "stop", "_call", "__init__"):
        with pytest.raises(UnknownOp) as info:
            client.call(name)
        assert info.value.code == "unknown_op" and info.value.exit_code == 21


def test_bad_requests_get_error_replies(raw: RawConn) -> None:
    assert raw.recv()["hello"]["protocol"] == 1
    cases = [
        (b"not json\n", None, "bad_request"),
        (b'{"v": 1, "op": "ping"}\n', None, "bad_request"),
        (b'{"v": 1, "id": 3}\n', 3, "bad_request"),
        (b'{"v": 1, "id": 4, "op": "ping", "args": 5}\n', 4, "bad_request"),
        (b'{"v": 2, "id": 5, "op": "ping"}\n', 5, "unsupported_version"),
        (b'{"v": 1, "id": 6, "input": {"x": 1}}\n', 6, "bad_request"),
        (b'{"v": 1, "id": 7, "op": "nope"}\n', 7, "unknown_op"),
    ]
    for line, req_id, code in cases:
        raw.send(line)
        reply = raw.recv()
        assert reply["v"] == 1 and reply["id"] == req_id and reply["ok"] is False, reply
        assert reply["error"]["code"] == code and reply["error"]["expected"] is True, reply
    raw.send(b'{"v": 1, "id": 8, "op": "ping"}\n')
    assert raw.recv() == {"v": 1, "id": 8, "ok": True, "result": "pong"}


def test_duplicate_request_id_is_refused(raw: RawConn) -> None:
    raw.recv()
    raw.send(b'{"v":1,"id":1,"op":"sleep","args":{"s":0.3}}\n{"v":1,"id":1,"op":"ping"}\n')
    first = raw.recv()
    assert first["id"] == 1 and first["error"]["code"] == "bad_request"
    assert "already in use" in first["error"]["message"]
    assert raw.recv() == {"v": 1, "id": 1, "ok": True, "result": "slept"}


def test_oversized_line_closes_the_connection(raw: RawConn) -> None:
    raw.recv()
    raw.send(b'{"v":1,"id":1,"op":"echo","args":{"x":"' + b"x" * MAX_LINE + b'"}}\n')
    reply = raw.recv()
    assert reply["id"] is None and reply["error"]["code"] == "bad_request"
    assert raw.file.readline() == b""


def test_streams(client: ControlClient) -> None:
    items = list(client.stream("count", n=50))
    assert items == [{"i": i} for i in range(50)]
    assert list(client.stream("count", n=0)) == []
    with pytest.raises(ProtocolError, match="not a streaming op"):
        list(client.stream("ping"))
    with pytest.raises(ProtocolError, match="is a streaming op"):
        client.call("count", n=1)


def test_stream_with_inputs(client: ControlClient) -> None:
    with client.open_stream("echo_inputs", timeout=5) as stream:
        items = iter(stream)
        for n in range(3):
            stream.send_input({"n": n})
            assert next(items) == {"got": {"n": n}}
        stream.send_input({"stop": True})
        assert list(items) == []
    assert stream.done and not stream.cancelled
    with pytest.raises(ProtocolError, match="has ended"):
        stream.send_input({"late": True})


def test_no_item_after_a_streams_end(raw: RawConn) -> None:
    """The answer to a bad input line read in the same pass as the input that ends the
    stream is still written before the end (it once came after it)."""
    raw.recv()
    for _ in range(20):
        raw.send(b'{"v":1,"id":1,"op":"echo_inputs"}\n')
        raw.send(b'{"v":1,"id":1,"input":{"stop":true}}\n{"v":1,"id":1,"input":7}\n')
        got = [raw.recv()]
        while "end" not in got[-1]:
            got.append(raw.recv())
        assert got[-1] == {"v": 1, "id": 1, "end": True}
        assert [m["item"]["error"]["code"] for m in got[:-1]] == ["bad_request"], got
        raw.send(b'{"v":1,"id":2,"op":"ping"}\n')
        assert raw.recv() == {"v": 1, "id": 2, "ok": True, "result": "pong"}


def test_cancel_a_stream(client: ControlClient, ops: Ops) -> None:
    stream = client.open_stream("forever", timeout=5)
    seen = []
    for item in stream:
        seen.append(item["i"])
        if len(seen) == 3:
            break  # leaving the loop closes the iterator, which cancels the stream
    assert seen == [0, 1, 2] and stream.done
    assert ops.stream_cancelled.wait(5), "the server never saw the cancel"
    assert client.call("ping") == "pong"


def test_cancel_reply_on_the_wire(raw: RawConn, ops: Ops) -> None:
    raw.recv()
    raw.send(b'{"v":1,"id":1,"op":"forever"}\n')
    assert raw.recv() == {"v": 1, "id": 1, "item": {"i": 0}}
    raw.send(b'{"v":1,"id":2,"op":"cancel","args":{"id":1}}\n')
    replies = []
    while True:
        reply = raw.recv()
        if "item" not in reply:
            replies.append(reply)
        if len(replies) == 2:
            break
    assert {"v": 1, "id": 2, "ok": True, "result": {"cancelled": True}} in replies
    assert {"v": 1, "id": 1, "end": True, "cancelled": True} in replies
    raw.send(b'{"v":1,"id":3,"op":"cancel","args":{"id":1}}\n')
    assert raw.recv() == {"v": 1, "id": 3, "ok": True, "result": {"cancelled": False}}
    assert ops.stream_cancelled.is_set()


def test_call_timeout_cancels_on_the_server(client: ControlClient, ops: Ops) -> None:
    with pytest.raises(IpcTimeout) as info:
        client.request("sleep", {"s": 30}, timeout=0.2)
    assert info.value.code == "ipc_timeout"
    assert ops.call_cancelled.wait(5)
    assert client.call("ping") == "pong"


def test_concurrent_calls_from_threads(client: ControlClient) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                assert client.call("echo", t=n, i=i) == {"t": n, "i": i}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors


def test_requests_on_one_connection_run_concurrently(client: ControlClient) -> None:
    results: list[str] = []
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(client.call("sleep", s=0.4)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["slept"] * 4
    assert time.monotonic() - start < 1.2, "requests were handled one after another"


def test_ping_round_trip(client: ControlClient, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(50):
        client.call("ping")
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        client.call("ping")
    mean_us = (time.perf_counter() - start) / n * 1e6
    with capsys.disabled():
        print(f"\n[ipc] ping round trip: {mean_us:.0f} µs (mean of {n}, blocking client)")
    assert mean_us < 50_000


def test_stop_disconnects_clients(sock_dir: Path, ops: Ops) -> None:
    path = sock_dir / "c.sock"
    server = ops.server(path)
    server.start()
    try:
        c = ControlClient(path, timeout=5)
        stream = c.open_stream("forever", timeout=5)
        items = iter(stream)
        next(items)
    finally:
        server.stop()
    assert not path.exists()
    try:
        with pytest.raises(ConnectionLost) as info:
            for _ in items:
                pass
        assert info.value.code == "connection_lost"
        with pytest.raises(ConnectionLost):
            c.call("ping")
    finally:
        c.close()


# -- the asyncio client --------------------------------------------------------------------------


def test_async_client(served: Path, ops: Ops) -> None:
    async def main() -> None:
        async with AsyncControlClient(served, timeout=5) as c:
            assert c.hello["pid"] == os.getpid()
            assert await c.call("ping") == "pong"
            assert await c.call("echo", a=1) == {"a": 1}
            replies = await asyncio.gather(*(c.call("echo", i=i) for i in range(100)))
            assert replies == [{"i": i} for i in range(100)]
            with pytest.raises(UnknownInstance):
                await c.call("fail")
            with pytest.raises(RemoteError) as info:
                await c.call("crash")
            assert info.value.code == "internal" and not info.value.expected
            with pytest.raises(UnknownOp):
                await c.call("nope")

            assert [item async for item in c.stream("count", n=20)] == [{"i": i} for i in range(20)]

            async with c.open_stream("echo_inputs", timeout=5) as stream:
                items = stream.__aiter__()
                await stream.send_input({"k": "v"})
                assert await items.__anext__() == {"got": {"k": "v"}}
                await stream.send_input({"stop": True})
                assert [item async for item in items] == []

            forever = c.open_stream("forever", timeout=5)
            async for item in forever:
                if item["i"] == 2:
                    break
            await forever.aclose()
            assert forever.done

            with pytest.raises(IpcTimeout):
                await c.request("sleep", {"s": 30}, timeout=0.1)

    asyncio.run(main())
    assert ops.stream_cancelled.wait(5)
    assert ops.call_cancelled.wait(5)


def test_async_client_without_server(sock_dir: Path) -> None:
    async def main() -> None:
        with pytest.raises(DaemonNotRunning) as info:
            await AsyncControlClient(sock_dir / "none.sock").connect()
        assert info.value.code == "daemon_not_running"

    asyncio.run(main())


# -- socket hygiene ------------------------------------------------------------------------------


def test_socket_and_dir_permissions(served: Path) -> None:
    assert stat.S_ISSOCK(os.lstat(served).st_mode)
    assert stat.S_IMODE(os.lstat(served).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(served.parent).st_mode) == 0o700


def test_unsafe_runtime_dir_is_refused(sock_dir: Path, ops: Ops) -> None:
    folder = sock_dir / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    server = ops.server(folder / "c.sock")
    with pytest.raises(UnsafeRuntimeDir) as info:
        server.start()
    err = info.value
    assert err.code == "unsafe_runtime_dir" and err.path == str(folder) and err.mode == 0o755
    assert str(folder) in str(err) and "0755" in str(err)
    assert not (folder / "c.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder owned by another uid")
def test_runtime_dir_of_another_user_is_refused(sock_dir: Path, ops: Ops) -> None:
    folder = sock_dir / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(UnsafeRuntimeDir, match="owned by uid 65534"):
        ops.server(folder / "c.sock").start()


def test_stale_socket_is_replaced(sock_dir: Path, ops: Ops) -> None:
    path = sock_dir / "run" / "c.sock"
    path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # the file exists, nobody listens: what a killed daemon leaves
    dead.close()
    with pytest.raises(DaemonNotRunning, match="nobody listening"):
        ControlClient(path, timeout=5)
    server = ops.server(path)
    server.start()
    try:
        with ControlClient(path, timeout=5) as c:
            assert c.call("ping") == "pong"
    finally:
        server.stop()


def test_a_file_in_the_way_is_not_removed(sock_dir: Path, ops: Ops) -> None:
    path = sock_dir / "c.sock"
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        ops.server(path).start()
    assert path.read_text() == "not a socket"


def test_second_server_on_the_same_path(served: Path, ops: Ops) -> None:
    second = ops.server(served)
    with pytest.raises(AlreadyRunning) as info:
        second.start()
    assert info.value.code == "already_running" and str(served) in str(info.value)
    second.stop()  # a no-op: it never started, and must not remove the live socket
    with ControlClient(served, timeout=5) as c:
        assert c.call("ping") == "pong"


def test_client_without_server(sock_dir: Path) -> None:
    path = sock_dir / "nobody.sock"
    with pytest.raises(DaemonNotRunning) as info:
        ControlClient(path, timeout=5)
    err = info.value
    assert err.code == "daemon_not_running" and err.exit_code == 26 and err.path == str(path)
    assert "aimterm cluster up" in str(err) and str(path) in str(err)


def test_server_arguments_are_checked(sock_dir: Path, ops: Ops) -> None:
    with pytest.raises(ValueError, match="built in"):
        ControlServer(sock_dir / "c.sock", {"cancel": ops.ping})
    with pytest.raises(ValueError, match="both plain and streaming"):
        ControlServer(sock_dir / "c.sock", {"count": ops.ping}, streaming={"count": ops.count})
    with pytest.raises(ConfigError, match="at most 107 bytes"):
        ControlServer(sock_dir / ("x" * 120), {})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_connection_from_another_uid_is_refused(served: Path) -> None:
    # Only for this test: let uid 65534 reach the socket, so the peer-uid check is what stops it.
    for folder in (served.parent, served.parent.parent):
        folder.chmod(0o711)
    served.chmod(0o666)
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads; the child below only
        # makes system calls and leaves with os._exit.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: become nobody, connect, expect one refusal then EOF
        code = 3
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(str(served))
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            reply = json.loads(data)
            if (data.count(b"\n") == 1 and reply["ok"] is False
                    and reply["error"]["code"] == "permission_denied"
                    and reply["error"]["expected"] is True and "hello" not in reply):
                code = 0
            else:
                code = 4
        except BaseException:
            code = 5
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, (
        "the other uid was not refused with exactly one permission_denied reply "
        "(3: setup failed, 4: wrong reply, 5: error in the child)")
    with ControlClient(served, timeout=5) as c:  # the owner is still served
        assert c.call("ping") == "pong"


def test_refusal_reaches_the_client_as_permission_denied() -> None:
    line = encode(protocol.error_reply(None, PermissionDenied("uid 1 may not use it")))
    with pytest.raises(PermissionDenied, match="uid 1 may not"):
        from aimterm.ipc.client import _check_hello

        _check_hello(line, "/x.sock")


def test_unsupported_server_protocol_is_refused() -> None:
    from aimterm.ipc.client import _check_hello

    bad = encode({"v": 1, "hello": {"server": "aimterm", "protocol": 9}})
    with pytest.raises(UnsupportedVersion):
        _check_hello(bad, "/x.sock")


# -- requests as futures -------------------------------------------------------------------------

def test_request_future_resolves_without_a_waiting_thread(client: ControlClient) -> None:
    futures = [client.request_future("echo", {"i": i}) for i in range(20)]
    assert [f.result(5) for f in futures] == [{"i": i} for i in range(20)]
    slow = client.request_future("sleep", {"s": 0.3})
    assert not slow.done()  # it returned at once
    assert slow.result(5) == "slept"


def test_request_future_carries_the_error_class(client: ControlClient) -> None:
    future = client.request_future("fail", {"name": "ghost"})
    with pytest.raises(UnknownInstance) as info:
        future.result(5)
    assert info.value.instance == "ghost"
    with pytest.raises(UnknownOp):
        client.request_future("nope").result(5)


def test_cancelling_a_request_future_cancels_on_the_server(client: ControlClient,
                                                           ops: Ops) -> None:
    future = client.request_future("sleep", {"s": 30})
    time.sleep(0.1)  # let the server start it
    assert future.cancel()
    assert ops.call_cancelled.wait(5)
    assert client.call("ping") == "pong"


def test_request_future_fails_when_the_server_goes(sock_dir: Path, ops: Ops) -> None:
    path = sock_dir / "f.sock"
    server = ops.server(path)
    server.start()
    with ControlClient(path, timeout=5.0) as c:
        future = c.request_future("sleep", {"s": 30})
        time.sleep(0.1)
        server.stop()
        with pytest.raises(ConnectionLost):
            future.result(5)
        with pytest.raises(ConnectionLost):
            c.request_future("ping")
