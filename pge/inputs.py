"""Open every input of a run (radiance, observation, location, GLT) with the library's checks
(`l2b_mask.inputs.acquisition`), plus the one the run configuration adds: the orthorectified
outputs need a GLT. Whichever format the inputs are in, the PGE only asks the `Acquisition`.
"""

from __future__ import annotations

from pathlib import Path

from l2b_mask.errors import InputProductError
from l2b_mask.inputs.acquisition import EMIT_TIME, Acquisition, open_acquisition
from l2b_mask.inputs.formats import input_files
from pge.runconfig import InputFiles

__all__ = ["EMIT_TIME", "Inputs", "input_paths", "open_inputs"]

Inputs = Acquisition  # the PGE's name for the opened, checked inputs of its acquisition


def open_inputs(files: InputFiles, need_glt: bool = False) -> Inputs:
    """Every input opened and checked; `need_glt`: the run cannot do without a GLT."""
    inputs = open_acquisition(files.radiance, files.observation, files.location, files.glt)
    if need_glt and inputs.glt is None:
        raise InputProductError(files.radiance, "the orthorectified outputs need a GLT: the "
                                                "granule has no 'location/glt_x', 'glt_y' and "
                                                "input_files.glt is not given")
    return inputs


def input_paths(files: InputFiles) -> dict[str, Path]:
    """Every input file given, keyed for the provenance record: an ENVI raster's header and
    binary (`<key>_header`, `<key>_data`), an LP DAAC granule itself (`<key>_granule`)."""
    out: dict[str, Path] = {}
    for key in ("radiance", "observation", "location", "glt"):
        path = getattr(files, key)
        if path is not None:
            out.update({f"{key}_{part}": file for part, file in input_files(path).items()})
    return out
