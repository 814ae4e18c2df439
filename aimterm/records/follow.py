"""A session's side of its tool's record: one :class:`RecordFollower` per run of the tool.

The screen settles a moment before some tools have written the turn to their record, so the
reply is polled for a short while, on a worker thread (the reads are file I/O; the loop never
waits on them). A record that gave nothing in time is polled more briefly for the next turns
of the run: a tool whose format changed must not add seconds to every turn.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time
from pathlib import Path

from aimterm.adapter.launch import Launch
from aimterm.records import recorder_class
from aimterm.records.base import RecordContext, RecordedReply, Recorder, TurnQuery

__all__ = ["RecordFollower", "follower_for", "with_recorder"]

log = logging.getLogger(__name__)

#: Reads of all sessions' records share these threads.
_WORKERS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="aimterm-record")
_POLL_S = 0.05
#: How long a record that has failed to give a reply in time is waited for afterwards.
_AFTER_A_MISS_S = 0.25


class RecordFollower:
    """Polls ``recorder`` for each turn's reply, at most ``wait_s`` seconds a turn."""

    def __init__(self, recorder: Recorder, wait_s: float) -> None:
        self.recorder = recorder
        self.wait_s = wait_s
        self.misses = 0
        self.turns = 0  # turns of this run asked for so far

    def next_query(self, prompt: str) -> TurnQuery:
        """The query of the turn about to be typed (call just before typing it)."""
        self.turns += 1
        return TurnQuery(prompt=prompt, number=self.turns, submitted_at=time.time())

    def fetch(self, query: TurnQuery) -> concurrent.futures.Future[RecordedReply | None]:
        wait = self.wait_s if not self.misses else min(self.wait_s, _AFTER_A_MISS_S)
        return _WORKERS.submit(self._poll, query, wait)

    def _poll(self, query: TurnQuery, wait: float) -> RecordedReply | None:
        deadline = time.monotonic() + wait
        while True:
            try:
                got = self.recorder.reply(query)
            except Exception:  # noqa: BLE001 - a reader's bug must not fail the turn
                log.warning("%s: reading the %s record failed", self.recorder.ctx.instance,
                            self.recorder.name, exc_info=True)
                got = None
            if got is not None:
                return got
            if time.monotonic() >= deadline:
                self.misses += 1
                return None
            time.sleep(_POLL_S)


def follower_for(launch: Launch, private_dir: Path, *, resume: bool) -> RecordFollower | None:
    """The follower of one run of the tool ``launch`` starts, if its adapter names a record
    (None otherwise, or when the reader cannot be made: the screen then gives the replies)."""
    reply = launch.spec.reply
    if reply.record is None:
        return None
    ctx = RecordContext(instance=launch.instance, cwd=launch.workdir() or os.getcwd(),
                        env=launch.environ(), private_dir=private_dir, resume=resume)
    try:
        recorder = recorder_class(reply.record)(ctx)
    except Exception:  # noqa: BLE001 - a reader that cannot start leaves the screen
        log.warning("%s: no %s record reader: replies come from the screen", launch.instance,
                    reply.record, exc_info=True)
        return None
    return RecordFollower(recorder, reply.record_wait_ms / 1000)


def with_recorder(launch: Launch, follower: RecordFollower | None) -> Launch:
    """``launch`` plus what the follower's recorder adds to the command line and environment."""
    if follower is None:
        return launch
    recorder = follower.recorder
    env = {**(launch.env or {}), **recorder.launch_env()}
    own = recorder.resume_args() if recorder.ctx.resume else None
    return dataclasses.replace(launch, env=env, args=[*launch.args, *recorder.launch_args()],
                               resume_args=own if own is not None else launch.resume_args)
