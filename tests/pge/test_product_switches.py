"""The library names the PGE's output switches only through the product table, and each name
is a field of the run configuration's `output` settings (issue 19): a misspelt switch fails
here, instead of silently never writing its product."""

from __future__ import annotations

import pytest

from l2b_mask.products.table import DATA_PRODUCTS, SWITCHES
from pge.errors import RunConfigError
from pge.runconfig import Output, RunConfig
from pge.sds.files import PRODUCT_FILES, enabled_keys


def _output(**switches: bool) -> Output:
    return Output(directory="/out", **switches)


def test_every_switch_of_the_tables_is_an_output_field():
    fields = set(Output.model_fields)
    named = {row.switch for row in DATA_PRODUCTS} | {f.switch for f in PRODUCT_FILES if f.switch}
    assert named <= fields, named - fields
    assert set(SWITCHES) <= fields


def test_every_write_field_is_a_switch_of_the_tables():
    writes = {name for name in Output.model_fields if name.startswith("write_")}
    assert writes == {f.switch for f in PRODUCT_FILES if f.switch}


def test_a_switch_that_is_no_field_is_an_error_not_a_silent_off():
    with pytest.raises(KeyError, match="write_orhto"):
        _output().switched_on("write_orhto")
    with pytest.raises(KeyError):
        enabled_keys({"write_envi": True})  # the other switches are not said: refused


def test_the_glt_need_comes_from_the_table():
    needs = {row.switch for row in DATA_PRODUCTS if row.needs_glt}
    assert needs == {"write_ortho"}
    assert _output().glt_switches() == []
    assert _output(write_ortho=True).glt_switches() == ["write_ortho"]
    data = {"input_files": {"radiance": "r.img", "observation": "o.img"},
            "ancillary_files": {"model_weights": "w.pt", "irradiance": "i.npy"},
            "output": {"directory": "out", "write_ortho": True}}
    with pytest.raises(RunConfigError, match="output.write_ortho is true but input_files.glt"):
        RunConfig.from_dict(data, "/b")
