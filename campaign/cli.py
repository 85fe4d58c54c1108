"""`l2b-mask-campaign INVENTORY TEMPLATE OUTPUT_ROOT`: reprocess many acquisitions on Dask.

Stdout: the campaign's structured log (JSON lines, one per finished acquisition with the
counts and ETA) and, last, one JSON summary line with the totals; on a terminal, a progress bar instead of
the log lines (the log always goes to `<output root>/logs/campaign-<time>.log` too).
Stderr: silent unless the campaign fails; then one line saying why.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from campaign.engine import run_campaign
from campaign.errors import CampaignError, CampaignExit, UsageProblem
from campaign.plan import DEFAULT_CPU_THREADS, DEFAULT_MEMORY_PER_PGE
from campaign.settings import CLUSTERS, JobQueue, Settings
from campaign.worker import RUNCONFIG_FIELD
from l2b_mask.errors import text_table


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageProblem(f"{message} (see l2b-mask-campaign --help)")


# Options that size or shape the embedded cluster. With --scheduler the cluster's own workers
# decide all of that, and with --cluster slurm the batch jobs do, so one of these there is an
# error: run anyway, the campaign would not be what the operator asked for (e.g. far more PGEs
# in flight than --workers said).
LOCAL_ONLY = (("workers", "--workers"), ("gpus", "--gpus"), ("memory_per_pge", "--memory-per-pge"),
              ("processes", "--processes"), ("dashboard", "--dashboard"))
JOBQUEUE_ONLY = (("partition", "--partition"), ("account", "--account"),
                 ("walltime", "--walltime"), ("jobs", "--jobs"), ("min_jobs", "--min-jobs"),
                 ("job_cores", "--job-cores"), ("job_memory", "--job-memory"))


def _given(args: argparse.Namespace, options: tuple[tuple[str, str], ...]) -> list[str]:
    return [flag for dest, flag in options if getattr(args, dest) not in (None, False)]


def _check_engine_options(args: argparse.Namespace) -> None:
    """Options of one kind of cluster given for another are a usage error, not ignored."""
    if args.scheduler is not None:
        given = _given(args, LOCAL_ONLY)
        if given:
            raise UsageProblem(f"{', '.join(given)}: only for the local cluster; with --scheduler "
                               f"the Dask workers decide (start them with --nthreads = PGEs at "
                               f"once, dask-cuda for GPUs); remove "
                               f"{'them' if len(given) > 1 else 'it'}")
        if args.cluster != "local":
            raise UsageProblem(f"--cluster {args.cluster} and --scheduler: choose one")
    if args.cluster == "local":
        given = _given(args, JOBQUEUE_ONLY)
        if given:
            raise UsageProblem(f"{', '.join(given)}: only with --cluster slurm (or pbs, sge, "
                               f"lsf)")
    else:
        given = [f for f in _given(args, LOCAL_ONLY) if f != "--dashboard"]
        if given:
            raise UsageProblem(f"{', '.join(given)}: only for the local cluster; with --cluster "
                               f"{args.cluster} use --jobs, --job-cores, --job-memory")
    if args.min_jobs is not None and args.jobs is not None and args.min_jobs > args.jobs:
        raise UsageProblem(f"--min-jobs {args.min_jobs} is more than --jobs {args.jobs}")


def _pge_command(text: str) -> tuple[str, ...]:
    try:
        parts = tuple(shlex.split(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a command line ({exc})") from None
    if not any(RUNCONFIG_FIELD in p for p in parts):
        raise argparse.ArgumentTypeError(f"no {RUNCONFIG_FIELD} in it (where the run "
                                         f"configuration's path goes)")
    return parts


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
        return value

    return parse


def _gpus(text: str) -> list[str]:
    if text.strip().lower() in ("none", ""):
        return []
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not all(i.isdigit() for i in ids):
        raise argparse.ArgumentTypeError(f"a comma-separated list of GPU indices or 'none', not "
                                         f"{text!r}")
    return ids


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="l2b-mask-campaign",
        description="Reprocess many EMIT acquisitions with the L2B cloud-mask PGE, one PGE "
                    "subprocess per acquisition on a Dask cluster (an embedded local one by "
                    "default, or Slurm jobs). Valid products are skipped, so a rerun finishes "
                    "what is missing.",
        epilog="exit codes:\n" + text_table(list(CampaignExit)) + "\nsee docs/campaigns.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inventory", type=Path,
                   help="folder tree to scan for *_l1b_rdn_*.img (paired with _l1b_obs_, and "
                        "_l1b_loc_/_l1b_glt_ when present), or a CSV with columns "
                        "radiance,observation[,location,glt]")
    p.add_argument("template", type=Path,
                   help="run configuration template: a PGE run configuration without "
                        "input_files and output.directory")
    p.add_argument("output_root", type=Path,
                   help="receives runconfigs/, products/<acquisition>/, logs/, attempts/ and "
                        "the report")
    _engine_options(p.add_argument_group("engine"))
    _jobqueue_options(p.add_argument_group(
        "batch jobs (--cluster slurm): defaults from dask-jobqueue's configuration, "
        "jobqueue.slurm in Dask's config files"))
    _run_options(p.add_argument_group("what to run"))
    return p


def _engine_options(e: argparse._ArgumentGroup) -> None:
    e.add_argument("--cluster", choices=CLUSTERS, default="local",
                   help="where the PGEs run: an embedded local cluster (default), or Dask "
                        "workers as Slurm jobs (dask-jobqueue; pbs, sge and lsf alike, "
                        "untested)")
    e.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of an existing Dask scheduler (tcp://host:8786) instead. The "
                        "local-cluster options (--workers, --gpus, --memory-per-pge, "
                        "--processes, --dashboard) are an error with it")
    e.add_argument("--workers", type=_positive_int,
                   help="local cluster: PGEs in flight (default: one per GPU, else cores // "
                        "threads per PGE, capped by memory)")
    e.add_argument("--threads-per-pge", type=_positive_int,
                   help=f"CPU threads of each PGE, written as processing.threads (default: the "
                        f"template's, else {DEFAULT_CPU_THREADS} on CPU, cores / GPUs with GPUs; "
                        f"with --scheduler: cores / worker threads of each worker's machine)")
    e.add_argument("--gpus", type=_gpus, metavar="IDS",
                   help="local cluster: GPU indices to use, e.g. 0,1, or 'none' for CPU only "
                        "(default: CUDA_VISIBLE_DEVICES, else nvidia-smi)")
    e.add_argument("--memory-per-pge", type=float, metavar="GIB",
                   help=f"local CPU cluster: memory one PGE may need, bounds the default worker "
                        f"count (default {DEFAULT_MEMORY_PER_PGE / 2**30:g})")
    e.add_argument("--processes", action="store_true",
                   help="local cluster: workers as processes instead of threads (each only waits "
                        "on its PGE subprocess, so threads are enough)")
    e.add_argument("--dashboard", metavar="ADDRESS",
                   help="local cluster or batch jobs: serve Dask's dashboard there, e.g. :8787 "
                        "(needs bokeh)")
    e.add_argument("--connect-timeout", type=_non_negative(float), default=60.0, metavar="S",
                   help="--scheduler: seconds to wait for the scheduler and a first worker; "
                        "--cluster slurm: for the first job's worker (0: do not wait)")
    e.add_argument("--pge-command", type=_pge_command, metavar="TEMPLATE",
                   help="the command of each PGE attempt, {runconfig} standing for its run "
                        "configuration, e.g. 'apptainer exec l2b.sif l2b-mask-pge {runconfig}' "
                        "(default: the PGE of this environment, python -m pge.cli)")


def _jobqueue_options(j: argparse._ArgumentGroup) -> None:
    j.add_argument("--partition", "--queue", dest="partition", metavar="NAME",
                   help="Slurm partition (queue)")
    j.add_argument("--account", metavar="NAME", help="account charged for the jobs")
    j.add_argument("--walltime", metavar="HH:MM:SS", help="time limit of each job")
    j.add_argument("--jobs", type=_positive_int, metavar="N",
                   help="at most N jobs at once (default 1); their number follows the work "
                        "between --min-jobs and N")
    j.add_argument("--min-jobs", type=_non_negative(int), metavar="N",
                   help="jobs kept while work remains (default 0)")
    j.add_argument("--job-cores", type=_positive_int, metavar="N",
                   help="CPUs of each job; it runs N // threads-per-pge PGEs at once")
    j.add_argument("--job-memory", metavar="SIZE", help="memory of each job, e.g. 16GiB")


def _run_options(r: argparse._ArgumentGroup) -> None:
    r.add_argument("--retries", type=_non_negative(int), default=2,
                   help="retries per acquisition after exit 6 (processing failed); exit 1, a "
                        "killed or lost PGE or a timeout gets one retry; others none (default "
                        "%(default)s)")
    r.add_argument("--retry-delay", type=_non_negative(float), default=5.0, metavar="S",
                   help="seconds before a retry starts (default %(default)g)")
    r.add_argument("--limit", type=_non_negative(int), metavar="N",
                   help="start at most N PGE runs (acquisitions needing one); the rest are "
                        "reported pending, and a rerun continues with them")
    r.add_argument("--force", action="store_true",
                   help="run the PGE for every acquisition, even where a valid product is there "
                        "or the same run already failed for good")
    r.add_argument("--retry-failed", action="store_true",
                   help="rerun acquisitions that failed with exit 2-5 in an earlier campaign run "
                        "although neither their inputs nor their run configuration changed")
    r.add_argument("--pge-timeout", type=_non_negative(float), metavar="S",
                   help="stop a PGE after S seconds (SIGTERM, then SIGKILL); retried once")
    r.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def settings_from(args: argparse.Namespace, args_list: list[str]) -> Settings:
    """The campaign's settings from the parsed command line."""
    memory_gib = (DEFAULT_MEMORY_PER_PGE / 2**30 if args.memory_per_pge is None
                  else args.memory_per_pge)
    return Settings(
        inventory=args.inventory, template=args.template, output_root=args.output_root,
        scheduler=args.scheduler, cluster=args.cluster, jobqueue=JobQueue(
            queue=args.partition, account=args.account, walltime=args.walltime,
            max_jobs=args.jobs or max(1, args.min_jobs or 0), min_jobs=args.min_jobs or 0,
            job_cores=args.job_cores, job_memory=args.job_memory),
        workers=args.workers, threads_per_pge=args.threads_per_pge,
        gpus=args.gpus, memory_per_pge=int(memory_gib * 2**30) or None,
        retries=args.retries, retry_delay_s=args.retry_delay, limit=args.limit,
        force=args.force, retry_failed=args.retry_failed, timeout_s=args.pge_timeout,
        pge_command=args.pge_command, dashboard=args.dashboard,
        local_processes=args.processes, connect_timeout_s=args.connect_timeout,
        log_level=args.log_level, stdout=sys.stdout, command=["l2b-mask-campaign", *args_list])


def _finish(code: int, status: str, error: str | None, extra: dict[str, Any] | None = None) -> int:
    code = int(code)
    body: dict[str, Any] = {"status": status, "exit_code": code}
    if error:
        body["error"] = error
    body.update(extra or {})
    print(json.dumps(body), flush=True)
    if error:
        print(f"l2b-mask-campaign: {error}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser().parse_args(args_list)
        _check_engine_options(args)
        if args.output_root.exists() and not args.output_root.is_dir():
            raise UsageProblem(f"{args.output_root}: output root exists and is not a folder")
        outcome = run_campaign(settings_from(args, args_list))
    except CampaignError as exc:
        code = exc.exit_code
        prefix = "template invalid: " if code == CampaignExit.TEMPLATE else ""
        return _finish(code, code.label, prefix + " ".join(str(exc).split()))
    except KeyboardInterrupt:
        return _finish(CampaignExit.INTERRUPTED, "interrupted",
                       "interrupted before the campaign started")
    totals = outcome.report.totals()
    paths = {"report_json": str(outcome.report.json_path),
             "report_csv": str(outcome.report.csv_path)}
    if outcome.interrupted:
        return _finish(CampaignExit.INTERRUPTED, "interrupted",
                       f"interrupted: {totals['done']} done, {totals['pending']} pending "
                       f"(report: {outcome.report.json_path})", {"totals": totals, **paths})
    if outcome.exit_code:
        return _finish(outcome.exit_code, "failure",
                       f"{totals['failed']} of {totals['acquisitions']} acquisitions failed "
                       f"(report: {outcome.report.json_path})", {"totals": totals, **paths})
    return _finish(CampaignExit.SUCCESS, "success", None, {"totals": totals, **paths})


if __name__ == "__main__":
    sys.exit(main())
