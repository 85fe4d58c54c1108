"""What a long training run (or evaluation) tells its operator, and how it is stopped cleanly.

On a terminal: a tqdm bar per epoch (spectra/s, loss, ETA) on stderr. Otherwise (a batch job,
a log file): one JSON object per line on stdout, every `interval_s` seconds and at each epoch's
end, which log collectors parse. SIGTERM (the scheduler) and Ctrl-C only set a flag that the
training loop reads between batches, so the checkpoint it then writes is consistent.
`PassProgress` does the same for one pass over the test spectra (l2b-mask-evaluate).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any, TextIO

from tqdm import tqdm


class StopRequest:
    """While entered, SIGTERM and SIGINT set `requested` instead of ending the process."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def log_event(event: str, stream: TextIO | None = None, **fields: Any) -> None:
    """One JSON log line."""
    print(json.dumps({"event": event, **fields}), file=stream or sys.stdout, flush=True)


class Progress:
    """Epoch progress as a bar (terminal) or JSON lines (anything else)."""

    def __init__(self, epochs: int, spectra_per_epoch: int, tty: bool | None = None,
                 interval_s: float = 10.0) -> None:
        self.epochs, self.total = epochs, spectra_per_epoch
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval_s = interval_s
        self._bar: tqdm | None = None
        self._epoch, self._done, self._first, self._loss = 0, 0, 0, float("nan")
        self._t0 = self._last = time.monotonic()

    def start_epoch(self, epoch: int, done: int = 0) -> None:
        """Epoch `epoch` (1-based) starts, `done` spectra already trained (a resumed epoch)."""
        self._epoch, self._done, self._first = epoch, done, done
        self._t0 = self._last = time.monotonic()
        if self.tty:
            self._bar = tqdm(total=self.total, initial=done, unit="spectra", unit_scale=True,
                             desc=f"epoch {epoch}/{self.epochs}", file=sys.stderr, leave=True)

    def update(self, spectra: int, loss: float) -> None:
        self._done += spectra
        self._loss = loss
        if self._bar is not None:
            self._bar.update(spectra)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            rate = (self._done - self._first) / max(now - self._t0, 1e-9)
            log_event("train_progress", epoch=self._epoch, epochs=self.epochs,
                      spectra_done=self._done, spectra_total=self.total,
                      spectra_per_s=round(rate, 1), loss=loss,
                      eta_s=round(max(self.total - self._done, 0) / max(rate, 1e-9), 1))

    def end_epoch(self, row: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            tqdm.write(" ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in row.items()), file=sys.stderr)
        else:
            log_event("epoch_done", **row)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class PassProgress:
    """Progress of one pass over a known number of items (l2b-mask-evaluate's test spectra):
    a tqdm bar on stderr on a terminal, else a JSON line (`event`) every `interval_s` seconds
    and one when the pass ends, on stdout as training's."""

    def __init__(self, total: int, event: str, desc: str, tty: bool | None = None,
                 interval_s: float = 10.0, unit: str = "spectra") -> None:
        self.total, self.event, self.unit = total, event, unit
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.done = 0
        self._logged: int | None = None  # the count of the last JSON line
        self._t0 = self._last = time.monotonic()
        self._bar: tqdm | None = None
        if self.tty:
            self._bar = tqdm(total=total, unit=unit, unit_scale=True, desc=desc,
                             file=sys.stderr, leave=True)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._log(now)

    def _log(self, now: float) -> None:
        self._logged = self.done
        rate = self.done / max(now - self._t0, 1e-9)
        log_event(self.event, **{f"{self.unit}_done": self.done, f"{self.unit}_total": self.total,
                                 f"{self.unit}_per_s": round(rate, 1),
                                 "eta_s": round(max(self.total - self.done, 0) / max(rate, 1e-9), 1)})

    def close(self) -> None:
        """End the bar, or log the final count (once)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self.tty and self.done != self._logged:
            self._log(time.monotonic())

    def __enter__(self) -> PassProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
