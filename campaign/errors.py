"""The campaign's own exit codes: a campaign is many PGE runs, so its codes mean other things
than the PGE's (`l2b_mask.errors.ExitCode`), and each failure class carries its code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from l2b_mask.errors import DescribedCode
from l2b_mask.errors import markdown_table as codes_table


class CampaignExit(DescribedCode):
    """Exit status of `l2b-mask-campaign`; the values are a contract with its callers."""

    SUCCESS = (0, "success",
               "Every acquisition is done or skipped (its valid product was already there); "
               "with --limit, the rest may be pending.")
    SOME_FAILED = (1, "some failed",
                   "At least one acquisition failed (see the report: exit code and error per "
                   "acquisition); the others were processed. A rerun retries them, but not "
                   "those that failed with 2-5 and whose inputs did not change.")
    USAGE = (2, "usage error",
             "Bad command line (a malformed --scheduler address, local-cluster options "
             "with --scheduler or --cluster slurm, a --pge-command without {runconfig} "
             "...), inventory unreadable or inconsistent, output root unusable, locked by "
             "another campaign, or with a symbolic link where the campaign writes.")
    TEMPLATE = (3, "template invalid",
                "The run configuration template is invalid (every problem is listed) "
                "or its ancillary files are missing or fail their checksums.")
    ENGINE = (6, "engine failed",
              "No Dask cluster to run on: scheduler unreachable, no worker joined (no "
              "Slurm job started one), or the local cluster failed to start.")
    INTERRUPTED = (8, "interrupted",
                   "SIGTERM or SIGINT: running PGEs were stopped (they remove their partial "
                   "outputs), the report was written; rerun to finish.")


class CampaignError(Exception):
    """A campaign failure reported on purpose, with its exit code."""

    exit_code: ClassVar[CampaignExit] = CampaignExit.USAGE


class ProblemsError(CampaignError):
    """A file the campaign reads is unusable; `problems` lists every reason at once."""

    def __init__(self, source: Path | str, problems: Sequence[str] | str) -> None:
        self.source = Path(source)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(f"{self.source}: {'; '.join(self.problems)}")


class UsageProblem(CampaignError):
    """The command line, the inventory or the output root is unusable."""


class EngineError(CampaignError):
    """No Dask cluster to run on (scheduler unreachable, no worker)."""

    exit_code = CampaignExit.ENGINE


def markdown_table() -> str:
    """The campaign's table, in the form of the PGE's (`l2b_mask.errors.markdown_table`)."""
    return codes_table(list(CampaignExit))
