"""Background reader and writer: order kept, failures surfaced, bounded look-ahead."""

from __future__ import annotations

import threading
import time

import pytest

from l2b_mask.algorithm.background import BackgroundWriter, prefetch


def test_prefetch_keeps_order_and_runs_elsewhere():
    threads = set()

    def items():
        for i in range(50):
            threads.add(threading.current_thread().name)
            yield i

    assert list(prefetch(items(), depth=3)) == list(range(50))
    assert threads == {"l2b-mask-reader"}


def test_prefetch_reads_at_most_depth_ahead():
    produced = []

    def items():
        for i in range(100):
            produced.append(i)
            yield i

    it = prefetch(items(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert len(produced) <= 4  # the one consumed, two queued, one waiting to be put
    it.close()


def test_prefetch_reraises_the_reader_failure():
    def items():
        yield 1
        raise OSError("disk gone")

    it = prefetch(items())
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)


def test_writer_writes_everything_in_order():
    seen = []
    with BackgroundWriter(seen.append, depth=1) as w:
        for i in range(30):
            w.submit(i)
    assert seen == list(range(30))


def test_writer_failure_surfaces_on_close():
    def write(item):
        if item == 3:
            raise OSError("no space left")

    w = BackgroundWriter(write)
    with pytest.raises(OSError, match="no space left"):
        for i in range(10):
            w.submit(i)
            time.sleep(0.01)
        w.close()
