"""A product counts as complete only with our own files: the completeness check (used by the PGE
and by the campaign to skip finished acquisitions) never follows a symbolic link."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from l2b_mask.spec import sha256_of
from pge.manifest import product_problem
from pge.sds.files import product_files


def _product(folder: Path) -> tuple[Path, Path]:
    """A one-output product with its provenance: the netCDF and the provenance paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = product_files("scene_l2b_mask", folder)
    files.netcdf.write_bytes(b"not really netCDF, but hashed all the same")
    record = {"outputs": {"netcdf": {"path": files.netcdf.name, "sha256": sha256_of(files.netcdf),
                                     "size_bytes": files.netcdf.stat().st_size}}}
    files.provenance.write_text(json.dumps(record))
    return files.netcdf, files.provenance


def test_a_complete_product_of_plain_files_passes(tmp_path):
    _product(tmp_path)
    assert product_problem(product_files("scene_l2b_mask", tmp_path)) is None


def test_a_product_file_that_is_a_link_is_not_complete(tmp_path):
    netcdf, _ = _product(tmp_path / "out")
    outside = tmp_path / "elsewhere.nc"
    shutil.move(netcdf, outside)  # same bytes, same checksum: only the link differs
    netcdf.symlink_to(outside)
    problem = product_problem(product_files("scene_l2b_mask", tmp_path / "out"))
    assert problem == "scene_l2b_mask.nc (netcdf) is a symbolic link"


def test_a_provenance_that_is_a_link_is_not_followed(tmp_path):
    _, provenance = _product(tmp_path / "out")
    outside = tmp_path / "elsewhere.json"
    shutil.move(provenance, outside)
    provenance.symlink_to(outside)
    problem = product_problem(product_files("scene_l2b_mask", tmp_path / "out"))
    assert problem == "scene_l2b_mask_provenance.json is a symbolic link"
