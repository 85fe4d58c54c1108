"""The model team's commands explain their exit codes in their own words: no products, run
configuration or L1B inputs, which are the PGE's."""

from __future__ import annotations

import pytest

from l2b_mask.errors import ExitCode, text_table
from l2b_mask.training import cli

PGE_WORDS = ("Products written", "run configuration", "radiance, observation, location, GLT")


@pytest.mark.parametrize("main", [cli.evaluate_main, cli.train_main, cli.release_main])
def test_help_tables_use_the_commands_own_words(main, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for code in cli.CODES:
        assert f"{code.value} {code.label} {' '.join(cli.MEANINGS[code].split())}" in text
    assert not [words for words in PGE_WORDS if words in text]


def test_every_code_a_command_can_end_with_has_its_words():
    assert ExitCode.RUNCONFIG not in cli.CODES
    assert set(cli.CODES) == set(ExitCode) - {ExitCode.RUNCONFIG}
    # the PGE's table is untouched by the commands' words
    assert "Products written and validated." in text_table()
