"""OrderingGate: dispatch order per mode (docs/design.md#ordering)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.ordering import OrderingGate

TP = ("in", 0)
TP2 = ("in", 1)


class Item:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def test_unordered_dispatches_everything() -> None:
    gate: OrderingGate[Item] = OrderingGate("unordered")
    items = [Item(str(i)) for i in range(3)]
    assert all(gate.offer(item, TP, b"same") for item in items)
    assert gate.release(items[0], TP, b"same") == []
    assert gate.queued() == 0 and gate.drop([TP]) == []


def test_key_mode_serialises_per_key_only() -> None:
    gate: OrderingGate[Item] = OrderingGate("key")
    a1, a2, a3, b1, n1, n2 = (Item(n) for n in ("a1", "a2", "a3", "b1", "n1", "n2"))
    assert gate.offer(a1, TP, b"a")
    assert not gate.offer(a2, TP, b"a")
    assert not gate.offer(a3, TP, b"a")
    assert gate.offer(b1, TP, b"b")
    assert gate.offer(n1, TP, None) and gate.offer(n2, TP, None)  # no key, no constraint
    assert gate.offer(Item("other-partition"), TP2, b"a")  # same key in another partition is another lane
    assert gate.queued() == 2
    assert gate.release(a1, TP, b"a") == [a2]
    assert gate.release(a2, TP, b"a") == [a3]
    assert gate.release(a3, TP, b"a") == []
    assert gate.offer(Item("a4"), TP, b"a")  # the lane is free again
    assert gate.queued() == 0


def test_partition_mode_is_sequential_per_partition() -> None:
    gate: OrderingGate[Item] = OrderingGate("partition")
    first, second, third = Item("1"), Item("2"), Item("3")
    assert gate.offer(first, TP, b"x")
    assert not gate.offer(second, TP, b"y")
    assert not gate.offer(third, TP, None)
    assert gate.offer(Item("p2"), TP2, b"x")
    assert gate.release(first, TP, b"x") == [second]
    assert gate.release(second, TP, b"y") == [third]


def test_drop_returns_queued_items_and_late_releases_change_nothing() -> None:
    gate: OrderingGate[Item] = OrderingGate("key")
    inflight, queued1, queued2, kept = Item("in"), Item("q1"), Item("q2"), Item("k")
    gate.offer(inflight, TP, b"a")
    gate.offer(queued1, TP, b"a")
    gate.offer(queued2, TP, b"a")
    gate.offer(kept, TP2, b"a")
    assert gate.drop([TP]) == [queued1, queued2]
    assert gate.queued() == 0
    # The partition comes back and a new event takes the lane; the old in-flight item finishing late
    # must not release the new lane's successor.
    fresh, successor = Item("fresh"), Item("succ")
    assert gate.offer(fresh, TP, b"a")
    assert not gate.offer(successor, TP, b"a")
    assert gate.release(inflight, TP, b"a") == []
    assert gate.release(fresh, TP, b"a") == [successor]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="ordering mode"):
        OrderingGate("random")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["key", "partition"]),
    st.lists(st.tuples(st.sampled_from([TP, TP2]), st.sampled_from([b"a", b"b", None])), max_size=40),
    st.randoms(),
)
def test_property_per_lane_fifo_and_one_in_flight(
    mode: str, offers: list[tuple[tuple[str, int], bytes | None]], rnd: random.Random
) -> None:
    gate: OrderingGate[tuple[int, tuple[str, int], bytes | None]] = OrderingGate(mode)  # type: ignore[arg-type]

    def lane(item: tuple[int, tuple[str, int], bytes | None]) -> object:
        return (item[1], None if mode == "partition" else item[2])

    running: list[tuple[int, tuple[str, int], bytes | None]] = []
    dispatched: list[tuple[int, tuple[str, int], bytes | None]] = []
    for seq, (tp, key) in enumerate(offers):
        item = (seq, tp, key)
        if gate.offer(item, tp, key):
            running.append(item)
            dispatched.append(item)
        # finish a random running item now and then
        if running and rnd.random() < 0.5:
            done = running.pop(rnd.randrange(len(running)))
            for nxt in gate.release(done, done[1], done[2]):
                running.append(nxt)
                dispatched.append(nxt)
        constrained = [lane(i) for i in running if mode == "partition" or i[2] is not None]
        assert len(constrained) == len(set(constrained)), "two in flight in one lane"
    while running:
        done = running.pop(0)
        for nxt in gate.release(done, done[1], done[2]):
            running.append(nxt)
            dispatched.append(nxt)
    assert sorted(dispatched) == sorted((s, tp, k) for s, (tp, k) in enumerate(offers))
    assert gate.queued() == 0
    for one_lane in {lane(i) for i in dispatched}:
        seqs = [i[0] for i in dispatched if lane(i) == one_lane and (mode == "partition" or i[2] is not None)]
        assert seqs == sorted(seqs), "a lane was dispatched out of order"
