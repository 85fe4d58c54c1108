"""What to do after a PGE attempt, from its exit code alone (the PGE's contract,
`l2b_mask.errors.ExitCode`): one row per exit code in `RULES`, and a test fails when a code
has none, so a new exit code cannot silently fall to some default.

Retry kinds: `ALL` retried up to the campaign's `--retries`; `ONCE` one retry (if `--retries`
>= 1): a transient fault gets a second chance, a bug does not get N; `NEVER`. Remembered
failures (exit 2-5: bad command, run configuration, input, ancillary) would fail the same way
again: the next campaign run does not start that PGE unless its inputs or run configuration
changed. An attempt without an exit code of the PGE's table (killed by a signal: crash, OOM
killer; stopped by `--pge-timeout`; lost with its worker or its Slurm job) retries `ONCE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from l2b_mask.errors import ExitCode


class Action(StrEnum):
    DONE = "done"
    RETRY = "retry"
    GIVE_UP = "give_up"


ALL, ONCE, NEVER = "all", "once", "never"


@dataclass(frozen=True)
class Rule:
    retry: str  # ALL, ONCE or NEVER
    remembered: bool  # a failure that would repeat: not rerun by the next campaign run
    why: str


RULES: dict[ExitCode, Rule] = {
    ExitCode.SUCCESS: Rule(NEVER, False, "done"),
    ExitCode.UNEXPECTED: Rule(ONCE, False, "a transient fault gets a second chance, a bug not N"),
    ExitCode.USAGE: Rule(NEVER, True, "the same command fails the same way"),
    ExitCode.RUNCONFIG: Rule(NEVER, True, "the same run configuration fails the same way"),
    ExitCode.INPUT: Rule(NEVER, True, "the same inputs fail the same way"),
    ExitCode.ANCILLARY: Rule(NEVER, True, "the same ancillary files fail the same way"),
    ExitCode.PROCESSING: Rule(ALL, False, "device unavailable or out of memory may pass"),
    ExitCode.OUTPUT: Rule(NEVER, False, "disk full or a lock held: the next campaign run tries"),
    ExitCode.INTERRUPTED: Rule(NEVER, False, "stopped on purpose: the next campaign run tries"),
}
LOST = Rule(ONCE, False, "killed, timed out or lost with its worker: retried once")

REMEMBERED = frozenset(code for code, rule in RULES.items() if rule.remembered)


def rule_for(exit_code: int | None, timed_out: bool = False) -> Rule:
    """The row of `exit_code` (None: no exit status, the attempt was lost; negative: killed by
    that signal; a code outside the table counts as unexpected)."""
    if timed_out or exit_code is None or exit_code < 0:
        return LOST
    try:
        return RULES[ExitCode(exit_code)]
    except ValueError:
        return RULES[ExitCode.UNEXPECTED]


def retries_allowed(exit_code: int | None, timed_out: bool, retries: int) -> int:
    """How many retries in all an acquisition failing this way may have."""
    kind = rule_for(exit_code, timed_out).retry
    return retries if kind == ALL else min(1, retries) if kind == ONCE else 0


def decide(exit_code: int | None, timed_out: bool, retries_used: int, retries: int) -> Action:
    """The next step after an attempt; `retries_used` of the campaign's `retries` are spent."""
    if exit_code == ExitCode.SUCCESS and not timed_out:
        return Action.DONE
    if retries_used < retries_allowed(exit_code, timed_out, retries):
        return Action.RETRY
    return Action.GIVE_UP
