"""`pge.signals.StopSignals`, the one stop-signal helper of the PGE and the campaign driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pge.errors import InterruptedRun
from pge.signals import StopSignals


def _term() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_stop_is_raised_once_and_the_handlers_are_put_back():
    before = signal.getsignal(signal.SIGTERM)
    signals = StopSignals().install()
    try:
        with pytest.raises(InterruptedRun):
            _term()
        _term()  # unwinding already: a second signal is ignored
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_guard_defers_the_stop_to_its_end():
    signals = StopSignals().install()
    reached = False
    try:
        with pytest.raises(InterruptedRun):
            with signals.guard():
                _term()
                reached = True  # the books are straightened before the stop lands
    finally:
        signals.restore()
    assert reached


def test_may_stop_false_ignores_the_signal_and_says_so():
    ignored: list[int] = []
    signals = StopSignals(may_stop=lambda: False, on_ignored=ignored.append).install()
    try:
        _term()
    finally:
        signals.restore()
    assert ignored == [signal.SIGTERM]


def test_the_campaign_imports_it_without_torch():
    code = "import sys, pge.signals, campaign.engine; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
