"""Work the dashboard hands to aimterm's own commands, as a person would type them: a job
file run (``aimterm jobs run FILE --detach``, which checks the file and gives the run to the
daemon). The dashboard holds no runtime of its own, so it does not load job files itself."""

from __future__ import annotations

import asyncio
import os

__all__ = ["CommandResult", "run_command"]

#: How long a command the dashboard starts may take (checking a file, handing it over).
COMMAND_TIMEOUT_S = 60.0


class CommandResult:
    """How a command ended: its exit code and its last line of output (or of errors)."""

    def __init__(self, code: int, line: str) -> None:
        self.code, self.line = code, line

    @property
    def ok(self) -> bool:
        return self.code == 0


async def run_command(argv: list[str], timeout: float = COMMAND_TIMEOUT_S) -> CommandResult:
    """Run ``argv`` with no terminal (its input empty), wait for it (bounded: killed past
    ``timeout``), and keep its last line: what aimterm's commands say last is the result or
    the one-line error."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    except OSError as exc:
        return CommandResult(127, f"cannot run {argv[0]}: {exc}")
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        return CommandResult(124, f"{' '.join(argv[:4])}… took over {timeout:g}s: stopped")
    text = (err if proc.returncode else out).decode("utf-8", "replace").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return CommandResult(proc.returncode or 0, lines[-1] if lines else "")
