"""The batcher that turns a burst of holds, captures and stock takes into a few requests."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import pytest

from services.common.batching import Batcher


class Recorder:
    """A `send` that records its batches and answers each key with its item doubled."""

    def __init__(self, fail_keys: frozenset[str] = frozenset(), fail_all: bool = False) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.release = asyncio.Event()
        self.fail_keys = fail_keys
        self.fail_all = fail_all

    async def send(self, items: Sequence[tuple[str, int]]) -> dict[Hashable, int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_all:
            raise ConnectionError("the service is away")
        return {key: ValueError(key) if key in self.fail_keys else value * 2 for key, value in items}


async def _calls(batcher: Batcher[tuple[str, int], int], keys: Sequence[str]) -> list[asyncio.Task[int]]:
    tasks = [asyncio.create_task(batcher.call(key, (key, n))) for n, key in enumerate(keys)]
    for _ in range(3):  # every call queued, and the first batch sent
        await asyncio.sleep(0)
    return tasks


def test_a_call_alone_goes_at_once_and_calls_made_meanwhile_go_together() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: Batcher[tuple[str, int], int] = Batcher(recorder.send)
        first = await _calls(batcher, ["a"])
        assert recorder.batches == [[("a", 0)]]  # not waiting for company
        rest = await _calls(batcher, ["b", "c", "d"])
        assert len(recorder.batches) == 1  # waiting while "a" is in flight
        recorder.release.set()
        assert [await t for t in first + rest] == [0, 0, 2, 4]
        assert recorder.batches == [[("a", 0)], [("b", 0), ("c", 1), ("d", 2)]]

    asyncio.run(scenario())


def test_batches_are_no_larger_than_their_size_and_one_key_never_twice_in_one() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.set()
        batcher: Batcher[tuple[str, int], int] = Batcher(recorder.send, size=2)
        tasks = await _calls(batcher, ["a", "a", "b", "c"])
        await asyncio.gather(*tasks)
        assert [[key for key, _ in batch] for batch in recorder.batches] == [["a"], ["a", "b"], ["c"]]

    asyncio.run(scenario())


def test_each_call_gets_its_own_error_and_a_failed_batch_fails_every_call_in_it() -> None:
    async def scenario() -> None:
        recorder = Recorder(fail_keys=frozenset({"b"}))
        recorder.release.set()
        batcher: Batcher[tuple[str, int], int] = Batcher(recorder.send)
        a, b, c = await _calls(batcher, ["a", "b", "c"])
        assert await a == 0 and await c == 4
        with pytest.raises(ValueError, match="b"):
            await b

        failing = Recorder(fail_all=True)
        failing.release.set()
        broken: Batcher[tuple[str, int], int] = Batcher(failing.send)
        results = await asyncio.gather(*await _calls(broken, ["x", "y"]), return_exceptions=True)
        assert [type(r) for r in results] == [ConnectionError, ConnectionError]
        failing.fail_all = False  # the service is back: the next call goes through
        assert await broken.call("z", ("z", 5)) == 10

    asyncio.run(scenario())


def test_a_caller_that_gives_up_does_not_stop_the_others() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: Batcher[tuple[str, int], int] = Batcher(recorder.send)
        a, b = await _calls(batcher, ["a", "b"])
        a.cancel()
        recorder.release.set()
        assert await b == 2
        assert await batcher.call("d", ("d", 21)) == 42

    asyncio.run(scenario())
