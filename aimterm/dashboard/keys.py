"""The dashboard's keys: one table, from which both the bindings and the help screen come."""

from __future__ import annotations

from textual.binding import Binding

__all__ = ["KEYS", "bindings", "help_rows"]

#: Every key: (keys, action, footer label or "" to leave it out of the footer, what it does).
#: The bindings and the help screen are both built from this table.
KEYS: list[tuple[str, str, str, str]] = [
    ("up,k", "select(-1)", "", "select the instance above"),
    ("down,j", "select(1)", "", "select the instance below"),
    ("w", "next_waiting", "next waiting", "select the next instance waiting for an answer"),
    ("y", "approve", "approve", "answer the selected instance's question with the approve keys"),
    ("n", "reject", "reject", "answer it with the reject keys"),
    ("a", "type_answer", "answer", "type an answer (sent as typed, then Enter)"),
    ("s", "send_instance", "send", "send a prompt to the selected instance"),
    ("S", "send_fleet", "send to fleet", "send a prompt to the fleet (any free instance)"),
    ("J", "run_jobs", "run jobs", "run a job file in the daemon (aimterm jobs run FILE --detach)"),
    ("slash", "edit_filter", "filter", "filter the events: instance:ID tool:T run:R kind:K1,K2"),
    ("i", "filter_instance", "", "show only the selected instance's events (again: all)"),
    ("c", "clear_filter", "", "clear the event filter"),
    ("r", "refresh_screen", "", "fetch the selected instance's screen again"),
    ("m", "metrics", "metrics", "metrics: turn time p50/p95 by tool, tokens, cost, turns per 10 s"),
    ("l", "logs", "log", "the selected instance's log: / search, f filter, F follow, e export"),
    ("p", "toggle_plan", "plan", "show the newest plan run's steps instead of the screen (again: "
                                 "the screen)"),
    ("t", "take_over", "take over",
     "take over the selected instance's terminal (aimterm attach; Ctrl-] gives it back)"),
    ("question_mark", "help", "help", "this help"),
    ("q", "quit", "quit", "quit"),
]
_LABEL = {"question_mark": "?", "slash": "/", "up": "↑", "down": "↓"}


def bindings() -> list[Binding | tuple[str, str] | tuple[str, str, str]]:
    return [Binding(keys, action, label or what, show=bool(label))
            for keys, action, label, what in KEYS]


def help_rows() -> list[tuple[str, str]]:
    """(keys as a person types them, what they do), for the help screen."""
    return [(" ".join(_LABEL.get(k, k) for k in keys.split(",")), what)
            for keys, _, _, what in KEYS]
