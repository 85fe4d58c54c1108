"""The README's exit-code tables are the code's (`l2b_mask.errors`, `campaign.errors`), and the
campaign's process stays free of torch (it only schedules PGE subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from campaign.errors import CampaignExit
from campaign.errors import markdown_table as campaign_table
from l2b_mask.cli import CODES, MEANINGS
from l2b_mask.errors import ExitCode, markdown_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _table_after(heading: str) -> str:
    """The Markdown table that follows the line starting with `heading`."""
    rest = README[README.index(heading):]
    lines = rest.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Code |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def test_pge_table_is_the_code():
    assert _table_after("`l2b-mask-pge`:") == markdown_table()


def test_scientists_command_table_is_the_code():
    assert _table_after("`l2b-mask` (the scientists") == markdown_table(CODES, MEANINGS)
    assert ExitCode.RUNCONFIG not in CODES


def test_campaign_table_is_the_code():
    assert _table_after("`l2b-mask-campaign` (") == campaign_table()
    assert [c.value for c in CampaignExit] == [0, 1, 2, 3, 6, 8]


def test_campaign_process_imports_no_torch():
    code = "import sys, campaign.cli, campaign.engine; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
