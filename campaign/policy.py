"""What to do after a PGE attempt, from its exit code alone (the PGE's contract, `pge.errors`).

- 0, success: done.
- 6, processing failed (device unavailable, out of memory): retried up to `retries` times.
- 1, unexpected error: retried once (if `retries` >= 1): a transient fault gets a second
  chance, a bug does not get N. A PGE killed by a signal (crash, OOM killer), stopped by
  `--pge-timeout`, or whose Dask task was lost (worker died) counts as 1.
- 2, 3, 4, 5 (usage, run configuration, input, ancillary): never retried, a rerun would fail
  the same way; the failure is remembered (`REMEMBERED`) so that the next campaign run does not
  start that PGE again unless its inputs or run configuration changed.
- 7 (output failed: disk full, a product in the way, another PGE holds the acquisition lock)
  and 8 (interrupted): not retried in this campaign run; the next one tries again.
"""

from __future__ import annotations

from enum import StrEnum

from pge.errors import ExitCode

REMEMBERED = frozenset({ExitCode.USAGE, ExitCode.RUNCONFIG, ExitCode.INPUT, ExitCode.ANCILLARY})


class Action(StrEnum):
    DONE = "done"
    RETRY = "retry"
    GIVE_UP = "give_up"


def retries_allowed(exit_code: int | None, timed_out: bool, retries: int) -> int:
    """How many retries in all an acquisition failing this way may have.

    `exit_code`: the PGE's; negative when killed by that signal; None when there is no exit
    status (the Dask task itself failed).
    """
    if timed_out or exit_code is None or exit_code < 0 or exit_code == ExitCode.UNEXPECTED:
        return min(1, retries)
    if exit_code == ExitCode.PROCESSING:
        return retries
    return 0


def decide(exit_code: int | None, timed_out: bool, retries_used: int, retries: int) -> Action:
    """The next step after an attempt; `retries_used` of the campaign's `retries` are spent."""
    if exit_code == ExitCode.SUCCESS and not timed_out:
        return Action.DONE
    if retries_used < retries_allowed(exit_code, timed_out, retries):
        return Action.RETRY
    return Action.GIVE_UP
