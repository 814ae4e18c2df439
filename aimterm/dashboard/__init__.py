"""``aimterm dashboard``: a Textual client of the daemon that follows its event stream.

:mod:`.source` (where the data comes from: the daemon, or a recording), :mod:`.model` (the
fleet view, pure), :mod:`.plan` (a plan run's steps, pure), :mod:`.widgets`, :mod:`.screens`
and :mod:`.logs` (what is drawn), :mod:`.commands` (aimterm's own commands it starts),
:mod:`.app` (the app). Only the standard library, L0 and :mod:`aimterm.ipc.client` are used, besides Textual.
"""

from __future__ import annotations

__all__ = ["run_dashboard"]


def run_dashboard(socket_path: str, *, approve: list[str] | None = None,
                  reject: list[str] | None = None, retry_s: float = 1.0,
                  attach_command: list[str] | None = None,
                  jobs_command: list[str] | None = None) -> int:
    """Run the dashboard on the daemon at ``socket_path`` until the user quits; returns 0.
    ``attach_command`` is the command line of ``aimterm attach`` for this cluster, without
    the instance's id (the ``t`` key runs it); ``jobs_command`` that of ``aimterm jobs run``,
    without the file (the ``J`` key)."""
    from aimterm.dashboard.app import DashboardApp
    from aimterm.dashboard.source import LiveSource

    DashboardApp(LiveSource(socket_path), approve=approve, reject=reject, retry_s=retry_s,
                 attach_command=attach_command, jobs_command=jobs_command).run()
    return 0
