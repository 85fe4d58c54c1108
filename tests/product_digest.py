"""Normalised digests of a PGE product folder: what a refactor must not change.

Every product file is reduced to what it holds (arrays, header keys, attributes, JSON fields)
with the values that legitimately differ between two runs taken out: creation and production
times, paths, timings, hosts, software versions, and the checksums and sizes of files that
carry a creation time. `python tests/product_digest.py --update` rewrites the committed list
(`tests/data/product_digests.json`) from the code as it is: do that only for a deliberate
change of a product, and say so in the commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
DIGESTS = PROJECT / "tests" / "data" / "product_digests.json"
# Floating-point arrays are kept whole beside the digests and compared to a tolerance: the
# compiled kernel picked for a CPU may differ from another CPU's in the last bits.
FLOATS = DIGESTS.with_suffix(".npz")
FLOAT_TOLERANCE = 1e-5
SHARED = PROJECT.parent / "shared"
REFERENCE = SHARED / "testdata" / "reference_scene_s7"

# Keys whose values differ from run to run (times, paths, hosts, versions, checksums of files
# that hold a creation time), in any JSON, header or attribute set.
VOLATILE = {
    "emit data product creation time", "emit pge input files", "emit pge run command",
    "emit pge version", "date_created", "history", "software_delivery_version",
    "ProductionDateTime", "ProviderDates", "Checksum", "SizeInBytes", "Size", "SizeUnit",
    "started", "finished", "timings_s", "host", "software", "path", "sha256", "size_bytes",
    "runconfig", "run_command", "inputs", "ancillary", "outputs", "PGEVersionClass",
    "torch_threads", "date_modified", "date_issued", "implementation", "creation_time",
    "created", "processing:datetime", "processing:software", "file:checksum", "file:size",
}


class _Arrays:
    """Floating-point arrays met while digesting, keyed by where they were found."""

    found: dict[str, np.ndarray] = {}
    where: list[str] = []


def _digest(array: np.ndarray) -> str:
    """Exact digest of an integer array; a key into `_Arrays.found` for a float array (with
    its shape, dtype and where it has no value, exactly)."""
    a = np.ascontiguousarray(array)
    if a.dtype.kind == "O":  # netCDF strings: their text (the bytes of an object array are pointers)
        return hashlib.sha256(json.dumps([str(v) for v in a.ravel()]).encode()
                              + str(a.shape).encode()).hexdigest()[:16]
    if a.dtype.kind == "f":
        key = "/".join(_Arrays.where) + f"#{len(_Arrays.found)}"
        _Arrays.found[key] = a
        nan = hashlib.sha256(np.isnan(a).tobytes()).hexdigest()[:16]
        return f"float {a.dtype} {a.shape} nan:{nan} -> {key}"
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def _envi_data(path: Path) -> list[str]:
    from spectral.io import envi

    cube = envi.open(str(path.with_suffix(".hdr")), str(path)).load()
    return [_digest(np.asarray(cube[:, :, b])) for b in range(cube.shape[2])]


def _clean(value: Any) -> Any:
    """JSON-like value with the volatile keys dropped, recursively."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _digest(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _envi_header(path: Path) -> dict[str, Any]:
    from spectral.io import envi

    return _clean({str(k): v for k, v in envi.read_envi_header(str(path)).items()})


def _netcdf(path: Path) -> dict[str, Any]:
    import netCDF4

    def group(g: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"attrs": _clean({k: g.getncattr(k) for k in g.ncattrs()})}
        out["dims"] = {k: len(d) for k, d in sorted(g.dimensions.items())}
        for name, var in sorted(g.variables.items()):
            var.set_auto_maskandscale(False)
            out[f"var:{name}"] = {"dims": list(var.dimensions), "dtype": str(var.dtype),
                                  "attrs": _clean({k: var.getncattr(k) for k in var.ncattrs()}),
                                  "data": _digest(var[...])}
        for name, sub in sorted(g.groups.items()):
            out[f"group:{name}"] = group(sub)
        return out

    with netCDF4.Dataset(path) as ds:
        return group(ds)


def _gdal(path: Path) -> dict[str, Any]:
    from osgeo import gdal

    ds = gdal.Open(str(path))
    out = {"size": [ds.RasterXSize, ds.RasterYSize, ds.RasterCount],
           "geotransform": list(ds.GetGeoTransform()), "projection": ds.GetProjection()[:60],
           "bands": [_digest(ds.GetRasterBand(i + 1).ReadAsArray()) for i in range(ds.RasterCount)],
           "descriptions": [ds.GetRasterBand(i + 1).GetDescription() for i in range(ds.RasterCount)],
           "nodata": [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount)],
           "metadata": dict(sorted((ds.GetMetadata() or {}).items()))}
    ds = None
    return out


def digest_folder(folder: Path, case: str) -> dict[str, Any]:
    """One entry per product file, keyed by its suffix after the product stem."""
    out: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        _Arrays.where = [case, name.rsplit("_mask", 1)[-1]]
        if name.startswith("."):
            continue
        if name.endswith("_pge.log"):
            out["_pge.log"] = "present"
        elif name.endswith("_provenance.json"):
            record = json.loads(path.read_text())
            out["_provenance.json"] = _clean({"processing": record.get("processing"),
                                              "skipped_outputs": record.get("skipped_outputs"),
                                              "outputs": None, "keys": sorted(record)})
        elif name.endswith(".json"):
            key = next(s for s in (".cmr.json", "_stac.json", "_metadata.json") if name.endswith(s))
            out[key] = _clean(json.loads(path.read_text()))
        elif name.endswith(".hdr"):
            out[".hdr"] = _envi_header(path)
        elif name.endswith(".img"):
            out[".img"] = _envi_data(path)
        elif name.endswith(".nc"):
            out[".nc"] = _netcdf(path)
        elif name.endswith((".tif", ".png")):
            suffix = name[name.rfind("_ortho"):] if "_ortho" in name else ".png"
            out[suffix] = _gdal(path)
    return out


def _run(base: Path, files: dict[str, str], output: dict[str, Any]) -> Path:
    """Run the PGE in-process on `files`, all outputs on; return the output folder."""
    import pge.cli
    from l2b_mask.spec import ModelSpec

    spec = ModelSpec.load()
    cfg = {"input_files": files,
           "ancillary_files": {"model_weights": str(spec.weights_path),
                               "irradiance": str(spec.irradiance_path)},
           "output": {"directory": str(base / "out"), **output},
           "processing": {"device": "cpu"},
           "pge": {"software_build_version": "010635"}}
    rc = base / "rc.json"
    rc.write_text(json.dumps(cfg))
    code = pge.cli.main([str(rc)])
    if code != 0:
        raise RuntimeError(f"PGE failed with exit {code} in {base}")
    return base / "out"


def make_digests(work: Path) -> dict[str, Any]:
    """Products of the two cases: the reference scene (no EMIT name, no geolocation) and an
    EMIT-named synthetic acquisition with location and GLT (every product switched on)."""
    from l2b_mask.synthetic.scene import generate_acquisition

    ref = work / "reference"
    ref.mkdir(parents=True)
    out = {"reference": digest_folder(_run(ref, {
        "radiance": str(REFERENCE / "public_s7_rdn.img"),
        "observation": str(REFERENCE / "public_s7_obs.img")}, {}), "reference")}
    syn = work / "synthetic"
    acq = generate_acquisition(syn / "in", lines=24, samples=24, seed=11)
    out["synthetic"] = digest_folder(_run(syn, {
        "radiance": str(acq.radiance), "observation": str(acq.observation),
        "location": str(acq.location), "glt": str(acq.glt)}, {"write_ortho": True}), "synthetic")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--update", action="store_true", help=f"rewrite {DIGESTS.name}")
    p.add_argument("--out", type=Path, help="write the digests (.json, .npz) here instead")
    args = p.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        digests = make_digests(Path(tmp))
    target = DIGESTS if args.update else args.out
    if target is None:
        p.error("give --update or --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    np.savez_compressed(target.with_suffix(".npz"), **_Arrays.found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
