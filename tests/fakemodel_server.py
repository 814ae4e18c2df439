"""Run a FakeModel until killed: ``python tests/fakemodel_server.py --port 0``.

Prints ``listening on http://127.0.0.1:PORT`` (flushed) once it accepts connections, then
serves until SIGTERM/SIGINT. Point agent CLIs at that URL (``/v1`` appended for aider and
Codex). ``--verbose`` logs one line per request on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aimterm.testing.fakemodel import FakeModel, ToolCall  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick a free one)")
    parser.add_argument("--think-s", type=float, default=0.0, help="delay before every model answer")
    parser.add_argument("--chunk-delay-s", type=float, default=0.0, help="pause after each streamed piece")
    parser.add_argument("--stream-chunk-words", type=int, default=3)
    parser.add_argument("--model", default="fake-model", help="model name in model lists")
    parser.add_argument("--prompt", action="append", default=[], help="a known prompt (repeatable)")
    parser.add_argument(
        "--edit",
        nargs=3,
        action="append",
        default=[],
        metavar=("TRIGGER", "PATH", "CONTENT"),
        help="answer prompts containing TRIGGER with an edit tool call writing CONTENT to PATH",
    )
    parser.add_argument(
        "--shell",
        nargs=2,
        action="append",
        default=[],
        metavar=("TRIGGER", "COMMAND"),
        help="answer prompts containing TRIGGER with a shell tool call running COMMAND",
    )
    parser.add_argument("--verbose", action="store_true", help="log requests on stderr")
    args = parser.parse_args(argv)

    tool_calls: dict[str, ToolCall] = {}
    for trigger, path, content in args.edit:
        tool_calls[trigger] = ToolCall(kind="edit", path=path, content=content)
    for trigger, command in args.shell:
        tool_calls[trigger] = ToolCall(kind="shell", command=command)

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FakeModel(
        port=args.port,
        think_s=args.think_s,
        chunk_delay_s=args.chunk_delay_s,
        stream_chunk_words=args.stream_chunk_words,
        model=args.model,
        prompts=args.prompt,
        tool_calls=tool_calls,
        verbose=args.verbose,
    ) as fm:
        print(f"listening on {fm.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
