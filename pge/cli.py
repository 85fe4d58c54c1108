"""`l2b-mask-pge RUNCONFIG`: the one place where exceptions become exit codes and stderr.

On success: JSON log events on stdout, then one JSON summary line, nothing on stderr, exit 0.
On failure: the summary line with the exit code and error, ONE line on stderr naming the file
and the problem, a distinct exit code, and no product left in the output folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from pge import logging as pge_logging
from pge.errors import (
    ExitCode,
    RunConfigError,
    UsageError,
    exit_code_for,
    one_line,
    text_table,
)
from pge.signals import StopSignals


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see l2b-mask-pge --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="l2b-mask-pge",
        description="EMIT L2B cloud mask PGE: one acquisition's L1B radiance and observation "
                    "geometry in, the SpecTf cloud mask product out.",
        epilog="exit codes:\n" + text_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runconfig", type=Path, nargs="?", help="JSON run configuration")
    p.add_argument("--validate-only", action="store_true",
                   help="check the run configuration, inputs and ancillary files; compute nothing")
    p.add_argument("--print-schema", action="store_true",
                   help="print the run configuration's JSON Schema and exit")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def _summary(products: dict[str, str] | None, code: ExitCode, error: str | None,
             cloud: float | None) -> str:
    body: dict[str, Any] = {"status": "success" if code == ExitCode.SUCCESS else "failure",
                            "exit_code": int(code)}
    if code == ExitCode.SUCCESS:
        body["products"] = products
        body["cloud_fraction_percent"] = cloud
    else:
        body["error"] = error
    return json.dumps(body)


class _Stop:
    """What the signal handler needs: the run in progress (its `interruptible` says whether a
    signal may still stop it) and the process's `StopSignals`."""

    run: Any = None
    signals: StopSignals | None = None


def _may_stop() -> bool:
    """After the publication has committed (`run.interruptible` false) the product is complete
    and a signal no longer stops the run."""
    return _Stop.run is None or _Stop.run.interruptible


def _signal_ignored(signum: int) -> None:
    pge_logging.get_logger().warning("signal_ignored", signal=signal.Signals(signum).name,
                                     reason="run already stopping or product committed")


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """Run the PGE and return its exit code. SIGTERM (the scheduler's stop) and SIGINT unwind
    the run: clean-up runs, exit code 8 (`pge.signals`). SIGXFSZ is ignored so that exceeding a
    file-size limit makes the write fail with EFBIG (an output failure, exit 7, scratch
    removed) instead of killing the process. `exiting`: the process ends right after (the
    console script), so SIGTERM and SIGINT stay ignored instead of restored: a signal in the
    last moments must not turn a finished run into one killed by the signal."""
    args_list = sys.argv[1:] if argv is None else argv
    _Stop.run = None
    _Stop.signals = StopSignals(ignore=(signal.SIGXFSZ,), may_stop=_may_stop,
                                on_ignored=_signal_ignored).install()
    try:
        return _main(args_list)
    finally:
        _Stop.run = None
        _Stop.signals.restore(ignore_stops=exiting)


def entry() -> None:
    """The `l2b-mask-pge` console script."""
    sys.exit(main(exiting=True))


def _main(args_list: list[str]) -> int:
    pge_logging.configure("info", console=sys.stdout)
    log = pge_logging.get_logger()
    try:
        args = _parser().parse_args(args_list)
        if args.version:
            from pge.provenance import package_version

            print(package_version())
            return 0
        if args.print_schema:
            from pge.runconfig import schema_text

            print(schema_text())
            return 0
        if args.runconfig is None:
            raise UsageError("a run configuration file is required (see l2b-mask-pge --help)")
        from pge.runconfig import ConfigFile

        # Read once, here: a bad run configuration fails before torch loads, and the run is
        # handed these bytes (parsed and hashed for the provenance), not the path to read again.
        loaded = ConfigFile.read(args.runconfig)
        from pge import run as pge_run

        guard = pge_run.Guard()
        _Stop.run = guard
        result = pge_run.execute(loaded, shlex.join(["l2b-mask-pge", *args_list]), guard,
                                 validate_only=args.validate_only)
        if result is None:
            log.info("validation_passed", runconfig=str(args.runconfig))
            print(json.dumps({"status": "valid", "exit_code": 0}))
            return 0
        published = {k: str(v) for k, v in result.published.items()}
        print(_summary(published, ExitCode.SUCCESS, None, result.fraction_percent), flush=True)
        return 0
    except SystemExit as exc:  # argparse's --help: it has printed and wants to stop
        if exc.code in (None, 0):
            return 0
        return _fail(log, UsageError(f"command line rejected (exit {exc.code})"))
    except BaseException as exc:  # noqa: BLE001 - the single place failures are mapped
        return _fail(log, exc)


def _fail(log: Any, exc: BaseException) -> int:
    if _Stop.signals is not None:
        _Stop.signals.finished()  # the run is over: a signal now must not cut the report short
    code = exit_code_for(exc)
    line = one_line(exc)  # stderr: one line, cut only when absurdly long
    whole = one_line(exc, cut=False)  # the summary and the log: never cut
    details: dict[str, Any] = {}
    if isinstance(exc, RunConfigError):  # every bad field, structured, for whoever reads the log
        details = {"runconfig": str(exc.path) if exc.path is not None else None,
                   "errors": exc.field_errors}
    try:
        log.error("run_failed", exit_code=int(code), error=whole,
                  exc_info=code == ExitCode.UNEXPECTED, **details)
    except Exception:  # logging must never mask the real failure
        pass
    print(_summary(None, code, whole, None), flush=True)
    print(line, file=sys.stderr, flush=True)
    return int(code)


if __name__ == "__main__":
    entry()
