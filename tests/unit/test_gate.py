"""The generation queue of ``cmrag serve``: at most concurrency + queue_size answers admitted,
however the requests arrive (a burst on an idle server, arrivals right after a turn ends)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra")

from chinese_mixtral_rag.api.gate import Gate
from chinese_mixtral_rag.errors import ServerBusy


async def hold(gate: Gate, release: asyncio.Event, outcomes: list[int]) -> None:
    try:
        await gate.enter()
    except ServerBusy as busy:
        outcomes.append(busy.status)
        return
    outcomes.append(200)
    await release.wait()
    gate.leave()


async def test_a_burst_on_an_idle_server_admits_only_what_fits() -> None:
    gate = Gate(concurrency=1, queue_size=2, wait_seconds=5)
    release = asyncio.Event()
    outcomes: list[int] = []
    tasks = [asyncio.create_task(hold(gate, release, outcomes)) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert sorted(outcomes) == [200] + [429] * 7  # one runs, two wait, seven refused at once
    assert (gate.busy, gate.waiting) == (1, 2)
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(outcomes) == [200] * 3 + [429] * 7
    assert (gate.busy, gate.waiting, gate.admitted) == (0, 0, 0)


async def test_arrivals_just_after_a_turn_ends_cannot_overfill_the_queue() -> None:
    gate = Gate(concurrency=1, queue_size=2, wait_seconds=5)
    await gate.enter()
    gate.leave()  # the turn is handed over: nothing has resumed yet
    release = asyncio.Event()
    outcomes: list[int] = []
    tasks = [asyncio.create_task(hold(gate, release, outcomes)) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert outcomes.count(429) == 7
    release.set()
    await asyncio.gather(*tasks)


async def test_waiting_too_long_is_a_503_and_gives_the_place_back() -> None:
    gate = Gate(concurrency=1, queue_size=4, wait_seconds=0.1)
    await gate.enter()
    with pytest.raises(ServerBusy) as refused:
        await gate.enter()
    assert refused.value.status == 503
    assert gate.admitted == 1
    gate.leave()
    await gate.enter()  # the turn is free again
    gate.leave()
