"""Command lines of the model team's loop: l2b-mask-evaluate, l2b-mask-train, l2b-mask-release.

Each prints what it wrote on stdout (train and evaluate: JSON log lines, or a progress bar on
stderr on a terminal; release: the specification's path on stdout, its comparison with the L2A
rule on stderr)
and, on failure, ONE line on stderr naming the file at fault, ending with the exit code of the
project's table (`l2b_mask.errors.ExitCode`): 2 usage, 4 a bad data set, scene list,
evaluation report or `--resume` checkpoint (inputs), 5 weights or model specification
(ancillary), 6 processing (device, memory), 7 output folder not writable or release already
there, 8 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from l2b_mask.algorithm.model import PRECISIONS
from l2b_mask.errors import ExitCode, L2BMaskError, UsageError, exit_code_for, text_table

# What the project's codes mean to these three commands (the members' own words are the PGE's:
# products, run configuration, L1B inputs). docs/training.md says when each happens.
MEANINGS = {
    ExitCode.SUCCESS: "Done: every output written.",
    ExitCode.UNEXPECTED: "A bug or an unforeseen condition (--debug shows the traceback).",
    ExitCode.USAGE: "Bad command line: an unknown option or value, --resume without a "
                    "checkpoint or with changed settings.",
    ExitCode.INPUT: "A labelled data set, scene list or evaluation report is missing or "
                    "malformed.",
    ExitCode.ANCILLARY: "The model specification, weights or irradiance is missing, "
                        "unreadable or does not match; a release worse than the L2A rule "
                        "without --allow-worse.",
    ExitCode.PROCESSING: "The computation failed: device unavailable or out of memory.",
    ExitCode.OUTPUT: "An output could not be written, the folder already holds a training "
                     "run, or the release version exists.",
    ExitCode.INTERRUPTED: "SIGTERM or SIGINT received (training writes its checkpoint "
                          "first); nothing is left half-written.",
}
CODES = list(MEANINGS)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser(prog: str, description: str) -> _Parser:
    p = _Parser(prog=prog, description=description, epilog="exit codes:\n" + text_table(CODES, MEANINGS),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="let an unexpected error raise, with its traceback")
    return p


def _run(prog: str, argv: list[str] | None, work: Callable[[list[str] | None], None]) -> int:
    """Run `work`; map any failure to one stderr line and the table's exit code."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        work(argv)
    except L2BMaskError as exc:
        return _fail(prog, exc)
    except KeyboardInterrupt as exc:
        return _fail(prog, exc)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, traceback on request
        if debug:
            raise
        return _fail(prog, exc, "(run with --debug for the traceback)")
    return 0


def _fail(prog: str, exc: BaseException, hint: str = "") -> int:
    code = exit_code_for(exc)
    text = str(exc) if isinstance(exc, L2BMaskError) else f"{type(exc).__name__}: {exc}"
    print(" ".join(f"{prog}: {code.label}: {text} {hint}".split()), file=sys.stderr)
    return int(code)


# ---------------------------------------------------------------------------------------------


def _evaluate(argv: list[str] | None) -> None:
    from l2b_mask.training.evaluate import EvaluationSettings, evaluate

    p = _parser("l2b-mask-evaluate", "Metrics, best thresholds, calibration and the L2A "
                "baseline of a SpecTf weights file on the test scenes of labelled HDF5 files.")
    p.add_argument("datasets", type=Path, nargs="+", metavar="DATASET.h5")
    p.add_argument("--weights", type=Path, required=True, help="state_dict (.pt) to evaluate")
    p.add_argument("--spec", type=Path, help="model specification (default: v0.1.0's)")
    p.add_argument("--test-csv", type=Path, required=True, help="test scene ids, one per line")
    p.add_argument("--threshold", type=float,
                   help="threshold of the `metrics` block (default: the specification's)")
    p.add_argument("--out", type=Path, required=True, help="report.json to write")
    p.add_argument("--plots", type=Path, help="folder for the four PNG figures")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--batch", type=int, default=4096, help="spectra per inference batch")
    a = p.parse_args(argv)
    report = evaluate(EvaluationSettings(
        weights=a.weights, datasets=tuple(a.datasets), test_csv=a.test_csv, out=a.out,
        spec=a.spec, threshold=a.threshold, plots=a.plots, device=a.device,
        precision=a.precision, batch_size=a.batch))
    print(json.dumps({"report": str(a.out), "n": report["n"], "f1": report["metrics"]["f1"],
                      "best_f1": report["best"]["f1"], "plots": report.get("plots", [])}))


def _train(argv: list[str] | None) -> None:
    from l2b_mask.training.record import TrainInputs
    from l2b_mask.training.train import TrainSettings, train

    defaults = TrainSettings()
    p = _parser("l2b-mask-train", "Train a SpecTf cloud model with the published recipe on "
                "labelled HDF5 files, streamed by chunks; SIGTERM or Ctrl-C writes a checkpoint "
                "and exits 8, --resume continues it.")
    p.add_argument("datasets", type=Path, nargs="+", metavar="DATASET.h5")
    p.add_argument("--train-csv", type=Path, required=True, help="training scene ids")
    p.add_argument("--test-csv", type=Path, required=True, help="test scene ids")
    p.add_argument("--outdir", type=Path, required=True,
                   help="weights.pt, metrics.csv, training.json and checkpoint.pt go here")
    p.add_argument("--spec", type=Path, help="model specification giving the architecture "
                   "(default: v0.1.0's)")
    for name in ("epochs", "batch", "lr", "dropout", "seed", "warmup_steps", "device", "threads"):
        field = TrainSettings.model_fields[name]
        kind = int if name == "threads" else type(getattr(defaults, name))
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(defaults, name),
                       help=f"{field.description} Default {getattr(defaults, name)}.")
    p.add_argument("--resume", action="store_true", help="continue from OUTDIR/checkpoint.pt")
    p.add_argument("--save-every-epoch", action="store_true",
                   help="also keep OUTDIR/weights_epochNNN.pt after each epoch")
    a = p.parse_args(argv)
    try:
        settings = TrainSettings(epochs=a.epochs, batch=a.batch, lr=a.lr, dropout=a.dropout,
                                 seed=a.seed, warmup_steps=a.warmup_steps, device=a.device,
                                 threads=a.threads, save_every_epoch=a.save_every_epoch)
    except ValidationError as exc:
        problems = "; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise UsageError(problems.replace("_", "-")) from None
    record = train(TrainInputs(tuple(a.datasets), a.train_csv, a.test_csv, a.outdir, a.spec,
                               a.resume), settings)
    print(json.dumps({"event": "training_done", "weights": str(a.outdir / record["weights"]),
                      "weights_sha256": record["weights_sha256"]}))


def _release(argv: list[str] | None) -> None:
    from l2b_mask.training.release import ReleaseSettings, release

    p = _parser("l2b-mask-release", "Write a model specification and its weights, ready for the "
                "PGE, from trained weights and their l2b-mask-evaluate report.")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--evaluation", type=Path, required=True, help="report.json of these weights")
    p.add_argument("--version", required=True, help="X.Y.Z")
    p.add_argument("--out", type=Path, required=True, help="folder of the release")
    p.add_argument("--threshold", type=float,
                   help="decision threshold (default: the evaluation's best-F1 threshold)")
    p.add_argument("--spec", type=Path, help="specification whose architecture, drop ranges and "
                   "irradiance the release keeps (default: v0.1.0's)")
    p.add_argument("--allow-worse", action="store_true",
                   help="release even when the best F1 of the evaluation is below the L2A "
                   "rule's on the same spectra (refused otherwise, exit 5)")
    a = p.parse_args(argv)
    done = release(ReleaseSettings(a.weights, a.evaluation, a.version, a.out, a.threshold,
                                   a.spec, a.allow_worse))
    note = " (released with --allow-worse)" if done.comparison.worse else ""
    print(f"l2b-mask-release: {done.comparison.text()}{note}; model card {done.card}",
          file=sys.stderr)
    print(done.spec)


def evaluate_main(argv: list[str] | None = None) -> int:
    return _run("l2b-mask-evaluate", argv, _evaluate)


def train_main(argv: list[str] | None = None) -> int:
    return _run("l2b-mask-train", argv, _train)


def release_main(argv: list[str] | None = None) -> int:
    return _run("l2b-mask-release", argv, _release)


if __name__ == "__main__":
    commands = {"evaluate": evaluate_main, "train": train_main, "release": release_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python -m l2b_mask.training.cli {{{','.join(commands)}}} ...")
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))
