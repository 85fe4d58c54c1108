"""What a campaign processes: EMIT L1B radiance/observation pairs, from a folder tree or a CSV.

A folder tree is scanned for `*_l1b_rdn_*.img`; each radiance is paired with the observation
(and, when present, the location and GLT) of the same acquisition: first the file in the same
folder whose name differs only by the product token (`_l1b_obs_` for `_l1b_rdn_`), else the
one file anywhere in the tree with the same EMIT flight line (`<acq>_o<orbit>_s<scene>`),
preferring the same folder and then the same build and version. A radiance without an
observation, or with several equally good candidates, stays in the inventory with a
`problem`: the campaign reports it as failed (input invalid) instead of dropping it unseen.

LP DAAC granules (`EMIT_L1B_RAD_<VVV>_<time>_<orbit7>_<scene3>.nc`, found by name) are paired
with the `EMIT_L1B_OBS_...nc` of the same acquisition: the same time, orbit and DAAC scene
counter (among several, the one in the same folder, then the one of the same version). The
radiance granule carries the location and the GLT, so none are looked for. A RAD without its
OBS, or with several equally good ones, is reported as above.

A CSV has a header row with the columns `radiance,observation[,location,glt]` (no others, so
a misspelt column is an error rather than a silently ignored file); relative paths resolve
against the CSV's folder; blank optional cells mean "none".
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from campaign.errors import ProblemsError
from l2b_mask.inputs.daac_names import DaacName, parse_daac_name
from pge.sds.naming import parse_identity, product_stem

KINDS = ("rdn", "obs", "loc", "glt")
FIELDS = {"rdn": "radiance", "obs": "observation", "loc": "location", "glt": "glt"}
CSV_REQUIRED = ("radiance", "observation")
CSV_OPTIONAL = ("location", "glt")
_TOKEN = re.compile(r"_l1b_(rdn|obs|loc|glt)_")


class InventoryError(ProblemsError):
    """The inventory cannot be read or is inconsistent (campaign exit 2)."""


@dataclass(frozen=True)
class Acquisition:
    """One unit of work: the input files of one acquisition (paths absolute)."""

    radiance: Path
    observation: Path | None
    location: Path | None = None
    glt: Path | None = None
    problem: str | None = None  # why it cannot be processed; None when it can

    def product_stem(self, product_version: str = "01") -> str:
        """The PGE's product stem for this radiance (the campaign's key for the acquisition)."""
        return product_stem(self.radiance, product_version)

    def acquisition_id(self, product_version: str = "01") -> str:
        """`emit<YYYYMMDD>t<HHMMSS>` for EMIT names; the product stem otherwise."""
        identity = parse_identity(self.radiance)
        return identity.acquisition_id if identity else self.product_stem(product_version)

    def inputs(self) -> dict[str, str | None]:
        return {"radiance": str(self.radiance),
                "observation": str(self.observation) if self.observation else None,
                "location": str(self.location) if self.location else None,
                "glt": str(self.glt) if self.glt else None}


# ---------------------------------------------------------------------------------------------
# Folder tree


def _sibling(path: Path, kind: str) -> Path:
    """The same file name with the product token `_l1b_<kind>_` instead of this one's."""
    m = _TOKEN.search(path.name)
    assert m is not None
    return path.with_name(f"{path.name[: m.start()]}_l1b_{kind}_{path.name[m.end():]}")


def _pick(rdn: Path, kind: str, exact: set[Path], by_line: dict[tuple[str, str], list[Path]]
          ) -> tuple[Path | None, str | None]:
    """The `kind` file of `rdn`'s acquisition: (path, None), (None, None) or (None, problem)."""
    sibling = _sibling(rdn, kind)
    if sibling in exact:
        return sibling, None
    identity = parse_identity(rdn)
    if identity is None:
        return None, None
    candidates = by_line.get((kind, identity.flight_line), [])
    for narrow in (lambda p: p.parent == rdn.parent,
                   lambda p: (parse_identity(p).build, parse_identity(p).version)  # type: ignore[union-attr]
                   == (identity.build, identity.version)):
        if len(candidates) > 1:
            candidates = [p for p in candidates if narrow(p)] or candidates
    if len(candidates) == 1:
        return candidates[0], None
    if candidates:
        names = ", ".join(str(p) for p in candidates[:4])
        return None, f"several {FIELDS[kind]} files match this radiance ({names})"
    return None, None


def _visible_files(base: Path, pattern: str) -> list[Path]:
    """Files matching `pattern` under `base`, outside hidden (scratch) folders, sorted."""
    return [p.absolute() for p in sorted(base.rglob(pattern))
            if p.is_file() and not any(part.startswith(".")
                                       for part in p.relative_to(base).parts[:-1])]


def _granule_pairs(base: Path) -> list[Acquisition]:
    """Each LP DAAC RAD granule under `base` with the OBS granule of its acquisition."""
    named = [(p, n) for p in _visible_files(base, "*.nc") if (n := parse_daac_name(p))]
    observations: dict[tuple, list[tuple[Path, DaacName]]] = defaultdict(list)
    for path, name in named:
        if name.kind == "OBS":
            observations[name.acquisition].append((path, name))
    out = []
    for rdn, name in ((p, n) for p, n in named if n.kind == "RAD"):
        candidates = observations.get(name.acquisition, [])
        if len(candidates) > 1:  # narrow to the same folder, then the same version
            candidates = [c for c in candidates if c[0].parent == rdn.parent] or candidates
        if len(candidates) > 1:
            candidates = [c for c in candidates if c[1].version == name.version] or candidates
        problem = None
        if not candidates:
            problem = (f"no observation granule found for this radiance (looked for "
                       f"{name.file_name('OBS')})")
        elif len(candidates) > 1:
            problem = ("several observation granules match this radiance ("
                       + ", ".join(str(p) for p, _ in candidates[:4]) + ")")
        obs = candidates[0][0] if len(candidates) == 1 else None
        out.append(Acquisition(radiance=rdn, observation=obs, problem=problem))
    return out


def scan_tree(root: Path | str) -> list[Acquisition]:
    """Every radiance (ENVI or LP DAAC granule) under `root` with its companions, sorted by
    radiance path."""
    base = Path(root)
    if not base.is_dir():
        raise InventoryError(base, "inventory folder not found (or not a folder)")
    files: dict[str, list[Path]] = {k: [] for k in KINDS}
    for path in _visible_files(base, "*.img"):
        m = _TOKEN.search(path.name)
        if m is not None:  # else not an L1B file
            files[m[1]].append(path)
    exact = {p for kind in KINDS[1:] for p in files[kind]}
    by_line: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for kind in KINDS[1:]:
        for p in files[kind]:
            if (identity := parse_identity(p)) is not None:
                by_line[(kind, identity.flight_line)].append(p)
    granules = _granule_pairs(base)
    if not files["rdn"] and not granules:
        raise InventoryError(base, "no EMIT L1B radiance (*_l1b_rdn_*.img, or LP DAAC "
                                   "EMIT_L1B_RAD_*.nc) found in this folder tree")
    out = []
    for rdn in files["rdn"]:
        found: dict[str, Path | None] = {}
        problems = []
        for kind in KINDS[1:]:
            found[kind], problem = _pick(rdn, kind, exact, by_line)
            if problem:
                problems.append(problem)
        if found["obs"] is None and not problems:
            problems.append(f"no observation file found for this radiance (looked for "
                            f"{_sibling(rdn, 'obs').name})")
        out.append(Acquisition(radiance=rdn, observation=found["obs"], location=found["loc"],
                               glt=found["glt"], problem="; ".join(problems) or None))
    return sorted(out + granules, key=lambda a: a.radiance)


# ---------------------------------------------------------------------------------------------
# CSV


def read_csv(path: Path | str) -> list[Acquisition]:
    """The acquisitions listed in a CSV inventory, in file order; every problem at once."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise InventoryError(p, "inventory CSV not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InventoryError(p, f"inventory CSV unreadable ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise InventoryError(p, "inventory CSV is empty (expected a header row "
                                "radiance,observation[,location,glt])")
    header = [h.strip().lower() for h in rows[0]]
    problems = []
    missing = [c for c in CSV_REQUIRED if c not in header]
    unknown = [h for h in header if h not in CSV_REQUIRED + CSV_OPTIONAL]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(repr(u) for u in unknown)} (allowed: "
                        f"{', '.join(CSV_REQUIRED + CSV_OPTIONAL)})")
    if len(set(header)) != len(header):
        problems.append("a column appears twice")
    if problems:
        raise InventoryError(p, problems)
    out, seen = [], {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            problems.append(f"line {number}: {len(row)} cells for {len(header)} columns")
            continue
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
        absent = [c for c in CSV_REQUIRED if not cells[c]]
        if absent:
            problems.append(f"line {number}: empty {', '.join(absent)}")
            continue
        paths = {k: _resolve(v, p.parent) if v else None for k, v in cells.items()}
        rdn = paths["radiance"]
        assert rdn is not None
        if rdn in seen:
            problems.append(f"line {number}: radiance already listed on line {seen[rdn]}")
            continue
        seen[rdn] = number
        out.append(Acquisition(radiance=rdn, observation=paths["observation"],
                               location=paths.get("location"), glt=paths.get("glt")))
    if problems:
        raise InventoryError(p, problems)
    if not out:
        raise InventoryError(p, "inventory CSV lists no acquisition")
    return out


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).absolute()


def load(source: Path | str) -> list[Acquisition]:
    """A folder is scanned; a file is read as CSV."""
    p = Path(source)
    if p.is_dir():
        return scan_tree(p)
    if not p.exists():
        raise InventoryError(p, "inventory not found (a folder to scan or a CSV file)")
    return read_csv(p)


def duplicates(acquisitions: Iterable[Acquisition], product_version: str) -> list[str]:
    """Product stems that several radiances would write (e.g. two versions of one L1B)."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for a in acquisitions:
        by_stem[a.product_stem(product_version)].append(a.radiance)
    return [f"{stem} would be written by {len(paths)} radiances ({', '.join(map(str, paths[:3]))})"
            for stem, paths in by_stem.items() if len(paths) > 1]
