"""A step's instance in a fleet the run is given (the daemon's): started in the step's
worktree for one attempt, stopped after it.

There it is the fleet's like any other instance — in ``aimterm cluster status``, attachable,
its transcript under the daemon's logs — rather than one the run holds out of sight. Without
such a fleet, or for a tool that does not take jobs as turns, the attempt runs as a job does
on its own (an instance of the orchestrator's, or the tool's one-shot command).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from aimterm.adapter.registry import load_adapter
from aimterm.errors import AimtermError
from aimterm.jobs.attempt import JobFleet

__all__ = ["StepFleet", "StepGroup"]

log = logging.getLogger(__name__)

#: How long an attempt waits for its instance to stop before the step's work is committed
#: (the tool may write its last files as it exits).
STOP_TIMEOUT_S = 30.0


class StepFleet(JobFleet, Protocol):
    """A fleet that can run a group of instances in a folder of the caller's choosing."""

    def add_group(self, name: str, tool: str, *, cwd: str, env: Mapping[str, str],
                  args: Sequence[str] = (), count: int = 1) -> None: ...

    def remove_group(self, name: str) -> concurrent.futures.Future[None]: ...


class StepGroup:
    """The group of one attempt: ``fleet`` is where the attempt's job runs (None: on its own,
    when there is no fleet, the tool takes no pooled jobs, or the fleet has no room)."""

    def __init__(self, fleet: StepFleet | None, *, name: str, tool: str, cwd: str,
                 env: Mapping[str, str]) -> None:
        self.name: str | None = None
        self.fleet: StepFleet | None = None
        if fleet is None:
            return
        jobs = load_adapter(tool).jobs
        if jobs.oneshot is not None and not jobs.pooled:
            return
        for candidate in (name, *(f"{name}.{n}" for n in range(2, 10))):
            try:
                fleet.add_group(candidate, tool, cwd=cwd, env=env, args=jobs.pooled_args)
            except ValueError:  # the name is taken (by a run of the same plan): the next one
                continue
            except (AimtermError, RuntimeError) as exc:  # at its ceiling, or stopping
                log.info("step %s runs on an instance of its own: %s", name, exc)
                return
            self.name, self.fleet = candidate, fleet
            return

    def close(self) -> None:
        """Stop the group's instance (it finishes the turn in hand) and wait, bounded."""
        if self.fleet is None or self.name is None:
            return
        try:
            self.fleet.remove_group(self.name).result(STOP_TIMEOUT_S)
        except (AimtermError, concurrent.futures.TimeoutError) as exc:
            log.warning("the instance of step group %s did not stop: %s", self.name, exc)
        finally:
            self.fleet = None
