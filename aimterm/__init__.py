"""aimterm: run many interactive command-line tools under real PTYs and drive them as one fleet.

The public API is re-exported here lazily so that ``import aimterm`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimterm.version import __version__

__all__ = [
    "AimtermError",
    "ClusterManager",
    "Fleet",
    "GroupSpec",
    "InstanceSetup",
    "Job",
    "JobAdapter",
    "JobResult",
    "Orchestrator",
    "Plan",
    "PlanRun",
    "Pool",
    "RemoteFleet",
    "RoutingStrategy",
    "Session",
    "SessionHandle",
    "State",
    "ToolProcessPool",
    "Turn",
    "TurnStatus",
    "__version__",
    "launch_cluster",
    "load_adapter",
    "load_plan",
]

_LAZY = {
    "Session": ("aimterm.session", "Session"),
    "Turn": ("aimterm.session", "Turn"),
    "TurnStatus": ("aimterm.session", "TurnStatus"),
    "State": ("aimterm.states", "State"),
    "load_adapter": ("aimterm.adapter.registry", "load_adapter"),
    "AimtermError": ("aimterm.errors", "AimtermError"),
    "ClusterManager": ("aimterm.cluster", "ClusterManager"),
    "launch_cluster": ("aimterm.cluster", "launch_cluster"),
    "ToolProcessPool": ("aimterm.cluster", "ToolProcessPool"),
    "RoutingStrategy": ("aimterm.router", "RoutingStrategy"),
    "Pool": ("aimterm.pool", "Pool"),
    "GroupSpec": ("aimterm.pool", "GroupSpec"),
    "InstanceSetup": ("aimterm.pool", "InstanceSetup"),
    "Fleet": ("aimterm.fleet", "Fleet"),
    "RemoteFleet": ("aimterm.ipc.fleet", "RemoteFleet"),
    "SessionHandle": ("aimterm.handle", "SessionHandle"),
    "Orchestrator": ("aimterm.jobs.orchestrator", "Orchestrator"),
    "Job": ("aimterm.jobs.spec", "Job"),
    "JobResult": ("aimterm.jobs.result", "JobResult"),
    "JobAdapter": ("aimterm.jobs.adapters", "JobAdapter"),
    "Plan": ("aimterm.plans.spec", "Plan"),
    "PlanRun": ("aimterm.plans.runner", "PlanRun"),
    "load_plan": ("aimterm.plans.loader", "load_plan"),
}

if TYPE_CHECKING:  # pragma: no cover
    from aimterm.adapter.registry import load_adapter
    from aimterm.cluster import ClusterManager, ToolProcessPool, launch_cluster
    from aimterm.errors import AimtermError
    from aimterm.fleet import Fleet
    from aimterm.handle import SessionHandle
    from aimterm.ipc.fleet import RemoteFleet
    from aimterm.jobs.adapters import JobAdapter
    from aimterm.jobs.orchestrator import Orchestrator
    from aimterm.jobs.result import JobResult
    from aimterm.jobs.spec import Job
    from aimterm.plans.loader import load_plan
    from aimterm.plans.runner import PlanRun
    from aimterm.plans.spec import Plan
    from aimterm.pool import GroupSpec, InstanceSetup, Pool
    from aimterm.router import RoutingStrategy
    from aimterm.session import Session, Turn, TurnStatus
    from aimterm.states import State


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'aimterm' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value
