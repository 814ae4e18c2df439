"""Routing policy and the dispatch queue, on plain data: no processes, no clocks, no threads."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence

import pytest

from aimterm.errors import AimtermError
from aimterm.router import (
    Candidate,
    DispatchQueue,
    NobodyFree,
    NoSuchTool,
    QueueFull,
    QueueTimeout,
    Request,
    Router,
    RoutingStrategy,
)


def fleet(n: int, adapter: str = "demo", **kw: object) -> list[Candidate]:
    return [Candidate(id=f"{adapter}-{i + 1}", adapter=adapter, **kw) for i in range(n)]  # type: ignore[arg-type]


def with_state(cands: Sequence[Candidate], ident: str, **changes: object) -> list[Candidate]:
    return [dataclasses.replace(c, **changes) if c.id == ident else c for c in cands]  # type: ignore[arg-type]


def tally(router: Router, request: Request, cands: Sequence[Candidate], rounds: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(rounds):
        chosen = router.choose(request, cands)
        assert chosen is not None
        seen[chosen.id] += 1
    return seen


def assert_fair(counts: Counter[str], ids: Sequence[str], total: int) -> None:
    share = total / len(ids)
    for ident in ids:
        assert abs(counts[ident] - share) <= 0.10 * share, (ident, counts)


# ----------------------------------------------------------------------------------- round robin


@pytest.mark.parametrize("n", [3, 7])
def test_round_robin_is_fair_over_1000_prompts(n: int) -> None:
    cands = fleet(n)
    counts = tally(Router("round_robin"), Request(tool="demo"), cands, 1000)
    assert_fair(counts, [c.id for c in cands], 1000)


def test_round_robin_rotates_in_order_when_all_ready() -> None:
    cands = fleet(3)
    router = Router(RoutingStrategy.ROUND_ROBIN)
    picks = [router.choose(Request(), cands) for _ in range(6)]
    assert [p.id for p in picks if p] == ["demo-1", "demo-2", "demo-3"] * 2


@pytest.mark.parametrize("pattern", ["alternate", "random"])
def test_round_robin_stays_fair_when_one_instance_is_busy_half_the_time(pattern: str) -> None:
    cands = fleet(3)
    router = Router()
    rng = random.Random(7)
    counts: Counter[str] = Counter()
    for i in range(1000):
        busy = (i % 2 == 1) if pattern == "alternate" else rng.random() < 0.5
        now = with_state(cands, "demo-2", ready=not busy, in_flight=int(busy))
        chosen = router.choose(Request(), now)
        assert chosen is not None and (chosen.id != "demo-2" or not busy)
        counts[chosen.id] += 1
    # A skipped instance gets its turn back when it is free again, so nobody loses share.
    assert_fair(counts, ["demo-1", "demo-2", "demo-3"], 1000)


def test_round_robin_skipping_does_not_shift_turns_onto_a_neighbour() -> None:
    cands = fleet(3)
    router = Router()
    busy2 = with_state(cands, "demo-2", ready=False)
    counts = tally(router, Request(), busy2, 10)
    assert counts == {"demo-1": 5, "demo-3": 5}


def test_round_robin_rotates_separately_per_filter_group() -> None:
    cands = fleet(2, "a") + fleet(2, "b")
    router = Router()
    first = [router.choose(Request(tool="a"), cands) for _ in range(2)]
    # Traffic to "a" does not advance the rotation of "b", and vice versa.
    second = [router.choose(Request(tool="b"), cands) for _ in range(2)]
    assert [c.id for c in first if c] == ["a-1", "a-2"]
    assert [c.id for c in second if c] == ["b-1", "b-2"]


def test_newcomer_is_not_flooded_and_long_absence_earns_bounded_catch_up() -> None:
    router = Router()
    cands = fleet(3)
    tally(router, Request(), cands, 300)
    grown = cands + [Candidate("demo-4", "demo")]
    counts = tally(router, Request(), grown, 400)
    assert_fair(counts, [c.id for c in grown], 400)
    # demo-1 away for 300 prompts: on return it catches up by at most one round (4 prompts)
    # on top of its fair share (3 of 12), and the others keep being served meanwhile.
    away = with_state(grown, "demo-1", ready=False)
    tally(router, Request(), away, 300)
    after = tally(router, Request(), grown, 12)
    assert after["demo-1"] <= 3 + 4
    assert all(after[c.id] >= 2 for c in grown[1:])


# ------------------------------------------------------------------------------------- filtering


def test_filter_by_tool_and_tags() -> None:
    cands = [
        Candidate("c-1", "claude", frozenset({"gpu", "eu"})),
        Candidate("c-2", "claude", frozenset({"eu"})),
        Candidate("p-1", "python", frozenset({"gpu", "eu"})),
    ]
    router = Router()
    for _ in range(5):
        chosen = router.choose(Request(tool="claude", tags=frozenset({"gpu"})), cands)
        assert chosen is not None and chosen.id == "c-1"
    picked = {c.id for c in (router.choose(Request(tags=frozenset({"gpu"})), cands) for _ in range(4)) if c}
    assert picked == {"c-1", "p-1"}
    assert {c.id for c in (router.choose(Request(tool="claude"), cands) for _ in range(4)) if c} == \
        {"c-1", "c-2"}
    assert router.choose(Request(tool="python", tags=frozenset({"us"})), cands) is None
    assert router.choose(Request(tool="node"), cands) is None


def test_has_match_tells_busy_from_missing() -> None:
    cands = [Candidate("d-1", "demo", ready=False, in_flight=1)]
    router = Router()
    assert router.choose(Request(tool="demo"), cands) is None
    assert router.has_match(Request(tool="demo"), cands)
    assert not router.has_match(Request(tool="other"), cands)
    assert not router.has_match(Request(tool="demo", tags=frozenset({"x"})), cands)
    assert not router.has_match(Request(), [])


def test_require_raises_distinct_errors() -> None:
    cands = [Candidate("d-1", "demo", ready=False, in_flight=1)]
    router = Router()
    with pytest.raises(NoSuchTool) as missing:
        router.require(Request(tool="claude"), cands)
    assert missing.value.code == "no_such_tool" and "'claude'" in str(missing.value)
    assert "demo" in str(missing.value)
    with pytest.raises(NobodyFree) as busy:
        router.require(Request(tool="demo"), cands)
    assert busy.value.code == "nobody_free" and "busy" in str(busy.value)
    assert busy.value.to_dict()["matching"] == 1
    assert router.require(Request(tool="demo"), with_state(cands, "d-1", ready=True)).id == "d-1"


def test_not_alive_is_never_chosen_even_if_marked_ready() -> None:
    cands = with_state(fleet(2), "demo-1", alive=False)
    router = Router()
    assert {c.id for c in (router.choose(Request(), cands) for _ in range(4)) if c} == {"demo-2"}


# ------------------------------------------------------------------------------------ least busy


def test_least_busy_picks_the_least_loaded() -> None:
    cands = [
        Candidate("d-1", "demo", queued=3),
        Candidate("d-2", "demo", queued=1),
        Candidate("d-3", "demo", queued=2),
        Candidate("d-4", "demo", ready=False, in_flight=1),  # unloaded queue, but not ready
    ]
    router = Router("least_busy")
    chosen = router.choose(Request(), cands)
    assert chosen is not None and chosen.id == "d-2"


def test_least_busy_spreads_ties() -> None:
    cands = fleet(3, queued=1)
    counts = tally(Router("least_busy"), Request(), cands, 30)
    assert counts == {"demo-1": 10, "demo-2": 10, "demo-3": 10}


# ---------------------------------------------------------------------------------------- sticky


def test_sticky_keeps_a_key_on_its_instance() -> None:
    cands = fleet(3)
    router = Router("sticky")
    first = router.choose(Request(key="conv-a"), cands)
    assert first is not None and router.affinity("conv-a") == first.id
    for _ in range(10):
        again = router.choose(Request(key="conv-a"), cands)
        assert again is not None and again.id == first.id
    other = router.choose(Request(key="conv-b"), cands)
    assert other is not None and other.id != first.id  # new keys spread like least_busy


def test_sticky_waits_for_its_busy_instance() -> None:
    cands = fleet(3)
    router = Router("sticky")
    holder = router.choose(Request(key="k"), cands)
    assert holder is not None
    busy = with_state(cands, holder.id, ready=False, in_flight=1)
    assert router.choose(Request(key="k"), busy) is None
    assert router.has_match(Request(key="k"), busy)
    assert router.affinity("k") == holder.id  # kept while the instance lives
    with pytest.raises(NobodyFree) as info:
        router.require(Request(key="k"), busy)
    assert info.value.holder == holder.id and holder.id in str(info.value)


def test_sticky_key_moves_when_its_instance_dies_and_stays_on_the_new_one() -> None:
    cands = fleet(3)
    router = Router("sticky")
    holder = router.choose(Request(key="k"), cands)
    assert holder is not None
    dead = with_state(cands, holder.id, ready=False, alive=False)
    moved = router.choose(Request(key="k"), dead)
    assert moved is not None and moved.id != holder.id
    assert router.affinity("k") == moved.id
    # The old instance comes back: the key stays where it moved.
    for _ in range(5):
        again = router.choose(Request(key="k"), cands)
        assert again is not None and again.id == moved.id


def test_sticky_key_moves_when_its_instance_is_gone() -> None:
    cands = fleet(2)
    router = Router("sticky")
    holder = router.choose(Request(key="k"), cands)
    assert holder is not None
    rest = [c for c in cands if c.id != holder.id]
    moved = router.choose(Request(key="k"), rest)
    assert moved is not None and moved.id == rest[0].id == router.affinity("k")


def test_sticky_dead_holder_is_dropped_even_when_nobody_can_take_over() -> None:
    cands = fleet(2)
    router = Router("sticky")
    holder = router.choose(Request(key="k"), cands)
    assert holder is not None
    nobody = [dataclasses.replace(c, ready=False, alive=c.id != holder.id) for c in cands]
    assert router.choose(Request(key="k"), nobody) is None
    assert router.affinity("k") is None


def test_sticky_new_key_goes_to_the_least_busy() -> None:
    cands = [Candidate("d-1", "demo", queued=2), Candidate("d-2", "demo")]
    router = Router("sticky")
    chosen = router.choose(Request(key="k"), cands)
    assert chosen is not None and chosen.id == "d-2" == router.affinity("k")


def test_sticky_without_key_behaves_like_least_busy() -> None:
    cands = [Candidate("d-1", "demo", queued=2), Candidate("d-2", "demo"), Candidate("d-3", "demo")]
    router = Router("sticky")
    counts = tally(router, Request(), cands, 20)
    assert counts == {"d-2": 10, "d-3": 10}


def test_forget_drops_affinities_of_a_removed_instance() -> None:
    cands = fleet(2)
    router = Router("sticky")
    a = router.choose(Request(key="a"), cands)
    b = router.choose(Request(key="b"), cands)
    assert a is not None and b is not None and a.id != b.id
    router.forget(a.id)
    assert router.affinity("a") is None
    assert router.affinity("b") == b.id
    router.release("b")
    assert router.affinity("b") is None


def test_forget_resets_rotation_for_a_reused_id() -> None:
    router = Router()
    cands = fleet(2)
    tally(router, Request(), cands, 100)
    router.forget("demo-1")
    # Rejoining under the same id it is a newcomer: no debt, no burst.
    counts = tally(router, Request(), cands, 10)
    assert counts == {"demo-1": 5, "demo-2": 5}


# ------------------------------------------------------------------------------------- strategies


def test_invalid_strategy_names_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        Router("fastest")
    text = str(info.value)
    assert "'fastest'" in text
    for name in ("round_robin", "least_busy", "sticky"):
        assert name in text


def test_strategy_accepts_enum_and_command_line_spellings() -> None:
    assert Router(RoutingStrategy.STICKY).strategy is RoutingStrategy.STICKY
    assert Router("least-busy").strategy is RoutingStrategy.LEAST_BUSY
    assert Router().strategy is RoutingStrategy.ROUND_ROBIN
    assert str(RoutingStrategy.LEAST_BUSY) == "least_busy"


def test_errors_have_stable_codes_and_belong_to_the_tree() -> None:
    errors: list[AimtermError] = [
        NoSuchTool("x"), NobodyFree("x", matching=2), QueueFull(4),
        QueueTimeout(2.5, tool="x", key="k"),
    ]
    assert [e.code for e in errors] == ["no_such_tool", "nobody_free", "queue_full", "queue_timeout"]
    assert len({e.exit_code for e in errors}) == 4
    assert "2.5s" in str(errors[3]) and "'k'" in str(errors[3])
    assert "all 2 instances of tool 'x' are busy" in str(errors[1])
    assert errors[2].to_dict()["maxsize"] == 4


# ------------------------------------------------------------------------------------ the queue


def test_queue_is_fifo() -> None:
    q: DispatchQueue[str] = DispatchQueue(10)
    for name in "abcde":
        q.put(name, Request(), deadline=100.0)
    assert len(q) == 5
    out = q.assign(Router(), fleet(2))
    assert [item for item, _ in out] == ["a", "b"]
    out = q.assign(Router(), fleet(5))
    assert [item for item, _ in out] == ["c", "d", "e"]
    assert len(q) == 0


def test_queue_back_pressure_at_maxsize() -> None:
    q: DispatchQueue[int] = DispatchQueue(2)
    q.put(1, Request(), 10.0)
    q.put(2, Request(), 10.0)
    with pytest.raises(QueueFull) as info:
        q.put(3, Request(), 10.0)
    assert info.value.code == "queue_full" and "2" in str(info.value)
    assert len(q) == 2
    assert q.remove(1)
    q.put(3, Request(), 10.0)  # room again once one leaves
    with pytest.raises(ValueError):
        DispatchQueue(0)


def test_queue_expiry_by_deadline() -> None:
    q: DispatchQueue[str] = DispatchQueue(10)
    q.put("late", Request(), deadline=5.0)
    q.put("soon", Request(), deadline=1.0)
    q.put("never", Request(), deadline=50.0)
    assert q.next_deadline() == 1.0
    assert q.expired(0.5) == []
    assert q.expired(1.0) == ["soon"]
    assert q.expired(10.0) == ["late"]
    assert len(q) == 1 and q.next_deadline() == 50.0
    assert DispatchQueue[str](1).next_deadline() is None


def test_queue_remove_by_identity_then_equality() -> None:
    q: DispatchQueue[list[int]] = DispatchQueue(5)
    first, second = [1], [1]
    q.put(first, Request(), 1.0)
    q.put(second, Request(), 1.0)
    assert q.remove(second)
    out = q.assign(Router(), fleet(1))
    assert out[0][0] is first
    assert not q.remove([2])


def test_assign_never_gives_one_instance_two_items() -> None:
    q: DispatchQueue[int] = DispatchQueue(20)
    for i in range(10):
        q.put(i, Request(), 100.0)
    for strategy in RoutingStrategy:
        out = q.assign(Router(strategy), fleet(3))
        ids = [c.id for _, c in out]
        assert len(ids) == len(set(ids)) == 3, strategy
    assert len(q) == 1


def test_assign_lets_later_items_pass_a_blocked_sticky_one() -> None:
    router = Router("sticky")
    cands = fleet(2)
    holder = router.choose(Request(key="k"), cands)
    assert holder is not None
    busy = with_state(cands, holder.id, ready=False, in_flight=1)
    q: DispatchQueue[str] = DispatchQueue(10)
    q.put("sticky", Request(key="k"), 100.0)
    q.put("free", Request(), 100.0)
    out = q.assign(router, busy)
    assert [(item, c.id) for item, c in out] == [("free", next(c.id for c in cands if c.id != holder.id))]
    assert len(q) == 1
    # Once its instance is free, the sticky item goes there, not elsewhere.
    out = q.assign(router, cands)
    assert [(item, c.id) for item, c in out] == [("sticky", holder.id)]


def test_assign_same_key_twice_in_one_pass_waits_for_the_same_instance() -> None:
    router = Router("sticky")
    q: DispatchQueue[str] = DispatchQueue(10)
    q.put("k-1", Request(key="k"), 100.0)
    q.put("k-2", Request(key="k"), 100.0)
    q.put("other", Request(key="j"), 100.0)
    out = q.assign(router, fleet(2))
    got = {item: c.id for item, c in out}
    assert set(got) == {"k-1", "other"} and got["k-1"] != got["other"]
    assert len(q) == 1
    out = q.assign(router, fleet(2))
    assert [(item, c.id) for item, c in out] == [("k-2", got["k-1"])]


def test_assign_skips_items_for_a_busy_tool_without_blocking_others() -> None:
    cands = [Candidate("a-1", "a", ready=False, in_flight=1), Candidate("b-1", "b")]
    q: DispatchQueue[str] = DispatchQueue(10)
    q.put("for-a", Request(tool="a"), 100.0)
    q.put("for-b", Request(tool="b"), 100.0)
    q.put("for-b-2", Request(tool="b"), 100.0)
    out = q.assign(Router(), cands)
    assert [(item, c.id) for item, c in out] == [("for-b", "b-1")]
    assert len(q) == 2
    out = q.assign(Router(), [dataclasses.replace(c, ready=True, in_flight=0) for c in cands])
    assert [item for item, _ in out] == ["for-a", "for-b-2"]


def test_sticky_key_asked_of_another_tool_moves_to_an_instance_of_that_tool() -> None:
    cands = fleet(1, "a") + fleet(1, "b")
    router = Router("sticky")
    first = router.choose(Request(tool="a", key="k"), cands)
    assert first is not None and first.id == "a-1"
    moved = router.choose(Request(tool="b", key="k"), cands)
    assert moved is not None and moved.id == "b-1" == router.affinity("k")
