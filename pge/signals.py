"""The stop signals of the PGE and of the campaign driver, handled one way for both.

SIGTERM (a batch scheduler's stop, `scancel`, the end of a walltime) and SIGINT raise
`InterruptedRun` in the main thread so that the code unwinds through its clean-up. Raised once:
a second signal while the run is already unwinding is ignored, so a clean-up is never cut
short. Two ways to hold a stop back:

- `guard()`: while the caller straightens its books (the campaign recording a result), a
  signal is deferred and raised when the guarded block ends;
- `may_stop`: a callable asked at each signal; False ignores the signal for good (the PGE
  after its publication committed: the product is complete and must stay so).

Imports only the standard library and `pge.errors` (no torch), so the campaign can use it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pge.errors import InterruptedRun

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Turns SIGTERM and SIGINT into one `InterruptedRun`; see the module docstring."""

    def __init__(self, *, ignore: tuple[int, ...] = (),
                 may_stop: Callable[[], bool] | None = None,
                 on_ignored: Callable[[int], None] | None = None) -> None:
        self.ignore = ignore  # also set to SIG_IGN while installed (the PGE: SIGXFSZ)
        self.may_stop = may_stop
        self.on_ignored = on_ignored
        self.raised = False
        self.guarded = False
        self.deferred: int | None = None
        self.previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        """Take over the signals (main thread only; elsewhere nothing changes). An inherited
        SIG_IGN for SIGINT (a background job) is respected."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (*STOP_SIGNALS, *self.ignore):
            current = signal.getsignal(sig)
            if sig == signal.SIGINT and current is signal.SIG_IGN:
                continue
            self.previous[sig] = current
            signal.signal(sig, signal.SIG_IGN if sig in self.ignore else self.handler)
        return self

    def handler(self, signum: int, frame: object) -> None:
        if self.raised or (self.may_stop is not None and not self.may_stop()):
            if self.on_ignored is not None:
                with contextlib.suppress(Exception):  # never fail inside a signal handler
                    self.on_ignored(signum)
            return
        if self.guarded:
            self.deferred = signum
            return
        self.raised = True
        raise InterruptedRun(signum)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Defer a stop signal to the end of the block."""
        self.guarded = True
        try:
            yield
        finally:
            self.guarded = False
        if self.deferred is not None and not self.raised:
            self.raised = True
            raise InterruptedRun(self.deferred)

    def finished(self) -> None:
        """The run is over: a signal now must not cut its report short."""
        self.raised = True

    def restore(self, *, ignore_stops: bool = False) -> None:
        """Put the previous handlers back; `ignore_stops`: the process is about to exit, so
        leave SIGTERM and SIGINT ignored instead (a signal in the last moments must not turn
        a finished run into one killed by it)."""
        for sig, handler in self.previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, signal.SIG_IGN if ignore_stops else
                              (handler if handler is not None else signal.SIG_DFL))
        self.previous = {}
