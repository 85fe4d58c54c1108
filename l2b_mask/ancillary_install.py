"""Copy the delivered ancillary files into the project's ancillary folder, checksum first.

Every spec in the destination names the files it needs and their sha256; a file whose
checksum does not match is never copied, so a corrupt delivery fails the set-up loudly.
Usage: python -m l2b_mask.ancillary_install SOURCE_DIR [DEST_DIR]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from l2b_mask.errors import AncillaryError
from l2b_mask.spec import ModelSpec, ancillary_dir, sha256_of, verify_sha256


def install(source: Path, dest: Path) -> list[Path]:
    """Install every file the specs in `dest` name; return the paths written or kept."""
    done: list[Path] = []
    specs = sorted(dest.glob("spectf_cloud_v*.toml"))
    if not specs:
        raise AncillaryError(dest, "no model specification (spectf_cloud_v*.toml) found")
    for spec_path in specs:
        spec = ModelSpec.load(spec_path)
        for target, digest, what in (
            (spec.weights_path, spec.weights_sha256, "model weights"),
            (spec.irradiance_path, spec.irradiance_sha256, "solar irradiance"),
        ):
            if target in done:
                continue
            if target.is_file() and sha256_of(target) == digest:
                done.append(target)
                continue
            origin = source / target.relative_to(spec_path.parent)
            verify_sha256(origin, digest, what)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            shutil.copyfile(origin, tmp)
            verify_sha256(tmp, digest, what)
            tmp.replace(target)
            done.append(target)
    return done


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    dest = Path(args[1]) if len(args) == 2 else ancillary_dir()
    try:
        for path in install(Path(args[0]), dest):
            print(f"ancillary: {path} ok")
    except AncillaryError as exc:
        print(f"ancillary: {exc}", file=sys.stderr)
        return 5
    return 0


if __name__ == "__main__":
    sys.exit(main())
