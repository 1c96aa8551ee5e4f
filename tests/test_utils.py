import threading

import pytest

from talkinghead.utils import prefetch


def test_prefetch_keeps_order_and_finishes():
    assert list(prefetch(range(100), depth=3)) == list(range(100))


def test_prefetch_reraises_producer_errors():
    def items():
        yield 1
        raise ValueError("boom")

    it = prefetch(items())
    assert next(it) == 1
    with pytest.raises(ValueError, match="boom"):
        next(it)


def test_prefetch_stops_the_producer_when_the_consumer_stops():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    before = threading.active_count()
    it = prefetch(items(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert threading.active_count() == before
    assert len(produced) < 10
