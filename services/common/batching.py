"""Coalescing concurrent calls into one request or transaction, for campaign-day bursts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Batcher(Generic[Item, Answer]):
    """Calls made while an earlier batch is in flight wait, then go together in the next one.

    Nothing waits on a timer: a call made alone goes out at once; under a burst, each batch
    carries what queued up meanwhile (at most `size`), so hundreds of orders cost a few
    requests and transactions instead of hundreds. Two calls with the same key (one hold,
    one order) never share a batch: the later one waits for the next.

    `send` gets the items and answers each key with its answer, or with the exception its
    call raises; if `send` itself raises, every call of that batch raises it.
    """

    def __init__(
        self,
        send: Callable[[Sequence[Item]], Awaitable[dict[Hashable, Answer | BaseException]]],
        size: int = 1000,
        in_flight: int = 1,
    ) -> None:
        self._send = send
        self._size = size
        self._in_flight_max = in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self._waiting: list[tuple[Hashable, Item, asyncio.Future[Answer]]] = []

    async def call(self, key: Hashable, item: Item) -> Answer:
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, item, answer))
        self._start()
        return await answer

    def _start(self) -> None:
        while self._waiting and len(self._in_flight) < self._in_flight_max:
            batch: dict[Hashable, tuple[Item, asyncio.Future[Answer]]] = {}
            later = []
            for key, item, answer in self._waiting:
                if key in batch or len(batch) >= self._size:
                    later.append((key, item, answer))
                else:
                    batch[key] = (item, answer)
            self._waiting = later
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start()

    async def _run(self, batch: dict[Hashable, tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._send([item for item, _ in batch.values()])
        except BaseException as failed:  # the whole batch: every call in it fails the same way
            for _, answer in batch.values():
                if not answer.done():
                    answer.set_exception(failed)
            if not isinstance(failed, Exception):
                raise
            return
        for key, (_, answer) in batch.items():
            if answer.done():  # its caller gave up waiting
                continue
            found = answers.get(key, LookupError(f"the batch gave no answer for {key!r}"))
            if isinstance(found, BaseException):
                answer.set_exception(found)
            else:
                answer.set_result(found)
