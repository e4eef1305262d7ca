"""``Background``: a consumer on a thread, fed by the calling thread."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

from gdpw.common.background import Background


def test_the_consumer_gets_every_item_in_order_and_returns_its_result() -> None:
    with Background(list) as sink:
        sink.put_all(range(50))
    assert sink.result == list(range(50))


def test_producing_and_consuming_overlap() -> None:
    def slow_sum(items: Iterable[int]) -> int:
        total = 0
        for i in items:
            time.sleep(0.1)
            total += i
        return total

    start = time.perf_counter()
    with Background(slow_sum) as sink:
        for i in range(5):
            time.sleep(0.1)  # the producer's work overlaps the consumer's
            sink.put(i)
    assert sink.result == 10
    assert time.perf_counter() - start < 0.85  # one after the other: 1.0 s


def test_a_consumer_error_reaches_the_producer() -> None:
    def fails(items: Iterable[int]) -> None:
        for i in items:
            if i == 2:
                raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), Background(fails, depth=1) as sink:
        for i in range(1000):  # never blocks for good on the full queue
            sink.put(i)
            time.sleep(0.001)


def test_a_producer_error_stops_the_consumer_with_it() -> None:
    seen: list[BaseException] = []

    def records(items: Iterable[int]) -> None:
        try:
            for _ in items:
                pass
        except BaseException as err:
            seen.append(err)
            raise

    with pytest.raises(KeyError, match="no face"), Background(records) as sink:
        sink.put(1)
        raise KeyError("no face")
    assert len(seen) == 1 and isinstance(seen[0], KeyError)  # e.g. write_video removes its partial file
