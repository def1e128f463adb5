"""Reading the feed one batch ahead: while the runner applies a batch, a thread reads the
next one on its own connection (the log is immutable, so reading ahead is safe)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

from clusterstore.eventstore.feed import FeedBlock


def prefetched(
    read: Callable[[int], list[FeedBlock]],
    first: list[FeedBlock],
    more: Callable[[list[FeedBlock]], bool],
) -> Iterator[list[FeedBlock]]:
    """``first``, then the batches a reader thread fetches one ahead of the consumer."""
    ahead: queue.Queue[list[FeedBlock] | BaseException] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work(position: int) -> None:
        try:
            while not stop.is_set():
                blocks = read(position)
                ahead.put(blocks)
                if not blocks or not more(blocks):
                    return
                position = blocks[-1].last_position
        except BaseException as e:  # handed to the consumer, raised there
            ahead.put(e)

    thread = threading.Thread(target=work, args=(first[-1].last_position,), daemon=True)
    thread.start()
    try:
        yield first
        while True:
            item = ahead.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item
            if not more(item):
                return
    finally:
        stop.set()
        while thread.is_alive():  # unblock a pending put, then let the thread end
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.05)
        thread.join()
