"""aimterm's pytest plugin: fixtures for testing tools, adapters and fleets under aimterm.

Installed with the package (the ``pytest11`` entry point ``aimterm``), so a project that has
aimterm installed gets these fixtures without importing anything; ``-p no:aimterm`` turns it
off. See docs/testing.md for a worked example.

* ``aimterm_fake_model`` — a running :class:`~aimterm.testing.fakemodel.FakeModel` on
  127.0.0.1, stopped after the test. Its options come from the closest
  ``@pytest.mark.aimterm_fake_model(**options)`` (test, class or module).
* ``aimterm_offline_env`` — ``(cli, home=None, **options) -> env``: a throwaway HOME that
  points the real agent CLI ``cli`` at that fake model, and the environment to run it in
  (:mod:`aimterm.testing.offline`). Without ``home``, a fresh folder removed after the test.
* ``aimterm_adapters`` — an adapter search path of the test's own: no user adapters, and
  ``.add(name, yaml_text)`` puts one on it.
* ``aimterm_fleet`` — ``(tools, count=3, **options) -> ClusterManager``: a started cluster
  (the arguments of :class:`~aimterm.cluster.ClusterManager`, plus ``timeout``), or
  ``aimterm_fleet.from_config(path)`` for a cluster file; each one is shut down after.
* ``aimterm_no_leaks`` — fails the test if a process it started outlives it
  (:mod:`aimterm.testing.leaks`), and kills the leftovers. Opt-in: request the fixture, mark
  tests ``@pytest.mark.aimterm_no_leaks``, or set ``aimterm_no_leaks = true`` in the pytest
  ini options to check every test.

Loading the plugin is cheap and does nothing by itself: pytest loads it in every session of
an environment that has aimterm installed, whatever is being tested. The runtime (the pool,
the fake model server) is imported only by the fixtures that need it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from aimterm.paths import ADAPTER_PATH_ENV

from .leaks import LeakCheck
from .offline import CLAUDE_FOREIGN_ENV, offline_env

if TYPE_CHECKING:
    from aimterm.cluster import ClusterManager
    from aimterm.testing.fakemodel import FakeModel

__all__ = ["AdapterDir", "Fleets", "OfflineEnv"]

_NO_LEAKS_INI = "aimterm_no_leaks"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(_NO_LEAKS_INI, type="bool", default=False,
                  help="aimterm: fail every test that leaves a process behind")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "aimterm_fake_model(**options): the FakeModel options of the "
                   "aimterm_fake_model fixture (think_s, prompts, tool_calls, reply, ...)")
    config.addinivalue_line(
        "markers", "aimterm_no_leaks: fail the test if a process it started outlives it")


# -- the leak check ----------------------------------------------------------------------------


@pytest.fixture
def aimterm_no_leaks() -> Iterator[LeakCheck]:
    """Tag every process the test starts (through the inherited environment) and fail the
    test if any tagged process outlives it. Leftovers are killed so one leak cannot cascade."""
    check = LeakCheck()
    with check:
        yield check
    left = check.leftovers()
    if left:
        check.kill(left)
        pytest.fail("test left processes behind:\n  " + "\n  ".join(map(str, left)),
                    pytrace=False)


@pytest.fixture(autouse=True)
def _aimterm_leak_check_if_asked(request: pytest.FixtureRequest) -> None:
    # Autouse fixtures are set up before the test's other function-scoped fixtures, so the
    # processes those start are tagged too.
    if request.node.get_closest_marker("aimterm_no_leaks") is not None \
            or request.config.getini(_NO_LEAKS_INI):
        request.getfixturevalue("aimterm_no_leaks")


# -- the fake model and the agent CLIs' offline HOMEs -----------------------------------------


@pytest.fixture
def aimterm_fake_model(request: pytest.FixtureRequest) -> Iterator[FakeModel]:
    """A :class:`~aimterm.testing.fakemodel.FakeModel` serving on 127.0.0.1 for the test."""
    from aimterm.testing.fakemodel import FakeModel

    marker = request.node.get_closest_marker("aimterm_fake_model")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    with FakeModel(**options) as model:
        yield model


class OfflineEnv:
    """``aimterm_offline_env(cli, home=None, **options)``: see :func:`aimterm.testing.offline
    .offline_env`. Building a ``claude`` environment also unsets the variables of
    :data:`~aimterm.testing.offline.CLAUDE_FOREIGN_ENV` in this process for the test, since
    instances inherit its environment."""

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self._monkeypatch = monkeypatch
        self._made: list[Path] = []

    def __call__(self, cli: str, home: str | os.PathLike[str] | None = None,
                 **options: Any) -> dict[str, str]:
        if home is None:
            # codex refuses to create its helper binaries under /tmp, where tmp_path lives.
            base = "/var/tmp" if cli == "codex" and os.path.isdir("/var/tmp") else None
            home = Path(tempfile.mkdtemp(prefix=f"aimterm-{cli}-home-", dir=base))
            self._made.append(home)
        if cli == "claude":
            for name in CLAUDE_FOREIGN_ENV:
                self._monkeypatch.delenv(name, raising=False)
        return offline_env(cli, home, self.url, **options)

    def cleanup(self) -> None:
        for home in self._made:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def aimterm_offline_env(aimterm_fake_model: FakeModel,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[OfflineEnv]:
    """Offline HOMEs for the real agent CLIs, pointed at ``aimterm_fake_model``."""
    made = OfflineEnv(aimterm_fake_model.url, monkeypatch)
    try:
        yield made
    finally:
        made.cleanup()


# -- adapters and fleets ------------------------------------------------------------------------


class AdapterDir:
    """The test's adapter search path: ``$AIMTERM_ADAPTER_PATH`` is this folder alone, and the
    user folder (``$XDG_CONFIG_HOME/aimterm/adapters``) is an empty one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, name: str, text: str) -> Path:
        """Write the adapter ``name`` (e.g. ``extends: name`` plus a policy) onto the path."""
        target = self.path / f"{name}.yaml"
        target.write_text(text)
        return target


@pytest.fixture
def aimterm_adapters(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> AdapterDir:
    """An adapter search path of the test's own (:class:`AdapterDir`): only the built-in
    adapters and what the test adds."""
    root = tmp_path_factory.mktemp("aimterm-adapters")
    folder = root / "adapters"
    folder.mkdir()
    monkeypatch.setenv(ADAPTER_PATH_ENV, str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    return AdapterDir(folder)


class Fleets:
    """``aimterm_fleet(tools, count=3, *, timeout=60, **options)``: a started
    :class:`~aimterm.cluster.ClusterManager`; all of them are shut down after the test."""

    def __init__(self) -> None:
        self.started: list[ClusterManager] = []

    def __call__(self, tools: Any, count: int = 3, *, timeout: float | None = 60.0,
                 **options: Any) -> ClusterManager:
        from aimterm.cluster import ClusterManager

        fleet = ClusterManager(tools, count, **options)
        self.started.append(fleet)  # (before start: a half-started fleet is shut down too)
        return fleet.start(wait=True, timeout=timeout)

    def from_config(self, path: str | os.PathLike[str], *,
                    timeout: float | None = 60.0) -> ClusterManager:
        """The instances, routing, queue and restart policy of a cluster file, run in this
        process (no daemon, no state dir)."""
        from aimterm.config import load_cluster_config
        from aimterm.pool import GroupSpec, RestartPolicy

        cfg = load_cluster_config(path)
        groups = [GroupSpec(g.adapter, count=g.count, cwd=g.cwd, env=dict(g.env), tags=g.tags,
                            stagger_ms=g.stagger_ms) for g in cfg.instances]
        restart = RestartPolicy(backoff_s=cfg.restart.backoff_s,
                                backoff_max_s=cfg.restart.backoff_max_s,
                                fast_failure_s=cfg.restart.fast_failure_s,
                                max_fast_failures=cfg.restart.max_fast_failures)
        return self(groups, routing=cfg.routing, queue_size=cfg.queue_size,
                    queue_timeout_s=cfg.queue_timeout_s, restart=restart, timeout=timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        while self.started:
            self.started.pop().shutdown(timeout)


@pytest.fixture
def aimterm_fleet() -> Iterator[Fleets]:
    """A factory of started fleets (:class:`Fleets`), each shut down after the test."""
    fleets = Fleets()
    try:
        yield fleets
    finally:
        fleets.shutdown()
