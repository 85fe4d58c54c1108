"""A small example campaign, and the figures of its operators' page (`campaign_report.html`).

    .venv/bin/python scripts/campaign_page_example.py WORK_DIR [--images docs/]

Writes 10 synthetic acquisitions of 32 x 32 pixels (l2b_mask.synthetic.scene) placed along a
descending track over Australia with rising cloud cover, one more whose radiance binary is
truncated (the PGE exits 4) and a radiance without its observation (the inventory reports it,
exit 4, no PGE); runs `l2b-mask-campaign` on them with 2 workers on the CPU; then saves the
page's two embedded figures (the footprint map and the cloud-fraction histogram) as PNG files
in `--images`, side by side in one picture (`campaign_page.png`), which docs/campaigns.md shows.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from l2b_mask.spec import ModelSpec
from l2b_mask.synthetic.scene import generate_acquisition

START = datetime(2024, 3, 2, 0, 0, 0, tzinfo=UTC)
COUNT = 10


def make_archive(folder: Path) -> None:
    for i in range(COUNT):
        generate_acquisition(folder / f"a{i:02d}", lines=32, samples=32, seed=i,
                             start_time=START + timedelta(minutes=i),
                             latitude=-14.0 - 1.4 * i, longitude=121.0 + 2.6 * i,
                             cloud_fraction=0.05 + 0.09 * i)
    broken = generate_acquisition(folder / "broken", lines=32, samples=32, seed=99,
                                  start_time=START + timedelta(minutes=COUNT),
                                  latitude=-30.0, longitude=148.0)
    data = Path(broken.radiance).read_bytes()
    Path(broken.radiance).write_bytes(data[: len(data) // 2])
    lone = generate_acquisition(folder / "lone", lines=32, samples=32, seed=98,
                                start_time=START + timedelta(minutes=COUNT + 1))
    Path(lone.observation).unlink()
    Path(lone.observation).with_suffix(".hdr").unlink()


def page_images(page: Path, folder: Path) -> list[Path]:
    """The page's embedded PNG figures, by image id, written to `folder`."""
    text = page.read_text(encoding="utf-8")
    out = []
    for name, data in re.findall(r'<img id="([a-z]+)"[^>]*src="data:image/png;base64,([^"]+)"',
                                 text):
        path = folder / f"campaign_page_{name}.png"
        path.write_bytes(base64.b64decode(data))
        out.append(path)
    return out


def side_by_side(paths: list[Path], target: Path) -> None:
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    height = max(i.height for i in images)
    canvas = Image.new("RGB", (sum(i.width for i in images), height), "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width
    canvas.save(target, optimize=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path)
    p.add_argument("--images", type=Path, help="folder for campaign_page.png")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    make_archive(a.work / "archive")
    spec = ModelSpec.load()
    (a.work / "template.json").write_text(json.dumps({
        "ancillary_files": {"model_weights": str(spec.weights_path),
                            "irradiance": str(spec.irradiance_path)},
        "processing": {"device": "cpu"}}))
    root = a.work / "root"
    code = subprocess.run([str(Path(sys.executable).with_name("l2b-mask-campaign")),
                           str(a.work / "archive"), str(a.work / "template.json"), str(root),
                           "--workers", "2", "--threads-per-pge", "1"], check=False).returncode
    print(f"campaign exit code {code}; page {root / 'campaign_report.html'}")
    if a.images is not None:
        shots = page_images(root / "campaign_report.html", a.work)
        side_by_side(shots, a.images / "campaign_page.png")
        print(f"wrote {a.images / 'campaign_page.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
