"""Throughput of every SpecTf inference path on one synthetic EMIT acquisition, in one command.

    .venv/bin/python benchmarks/bench_inference.py            # ~5-10 min on 2 cores
    .venv/bin/python benchmarks/bench_inference.py --quick    # smaller, for a smoke test

1. Writes a synthetic acquisition (l2b_mask.synthetic.scene, `--lines` x `--samples`) and converts its
   pixels with a value to TOA reflectance, as the PGE does.
2. Times each path in its own subprocess (so the peak RSS is that path's): the published-style
   baseline (nn.MultiheadAttention with need_weights=True, batch 4096, TorchScript +
   optimize_for_inference, bfloat16 and float32; weights of the official file), our torch SDPA path,
   and the compiled kernel paths: each precision with the variant the calibration chose for this
   CPU (`l2b_mask.kernels.calibrate`), and each variant this CPU can run, pinned
   (`kernel-<precision>:<variant>`). Slow paths run on the first `--baseline-pixels` pixels only
   (stated in the table); every row is compared with our float32 path on the pixels it ran.
   Paths this CPU cannot run (a kernel precision or pinned variant without its instructions here)
   are skipped, each with the reason. Kernel rows state their GMAC/s per core and the fraction of
   this CPU's limit (`cpu_peak.py`: FMA for the float32 builds, the best 16-bit multiply-add for
   the 16-bit ones).
3. End to end: `SceneInference.run` over a `--e2e-lines` x 1242 scene, extrapolated to 1280 lines.

Wall-clock figures depend on what else runs on the machine: the load average is printed, and
"px/CPU-s" (pixels per second of CPU time used by the process) is less sensitive to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from l2b_mask.kernels.variants import VARIANTS as KERNEL_VARIANTS

THRESHOLD = 0.51
HERE = Path(__file__).resolve()

# name: (description, runs on the baseline subset only)
VARIANTS = {
    "published-bf16": ("nn.MHA need_weights, TorchScript, batch 4096, bfloat16", True),
    "published-fp32": ("nn.MHA need_weights, TorchScript, batch 4096, float32", True),
    "torch-sdpa-fp32-b4096": ("our torch path (fused SDPA), float32, batch 4096", True),
    "torch-sdpa-fp32-b256": ("our torch path (fused SDPA), float32, batch 256", True),
    "torch-sdpa-bf16-b256": ("our torch path, bfloat16 attention products, batch 256", True),
    "kernel-float32": ("compiled kernel, precision float32 (default), calibrated variant", False),
    "kernel-float32-fastexp": ("compiled kernel, precision float32-fastexp, calibrated variant", False),
    "kernel-bfloat16": ("compiled kernel, precision bfloat16, calibrated variant", False),
}
# every kernel variant pinned, for its precision (not float32-fastexp: same variants as float32)
VARIANTS |= {f"kernel-{p}:{v.name}": (f"compiled kernel {v.name}: {v.description}", False)
             for v in KERNEL_VARIANTS.values() for p in v.precisions if p != "float32-fastexp"}


def macs_per_pixel(tokens: int, d: int = 64, ff: int = 64) -> int:
    """Multiply-adds of one pixel's forward pass: the four projections per token, and Q.K^T and
    P.V (tokens x d each per token); the element-wise work is not counted."""
    return tokens * (3 * d * d + d * d + 2 * d * ff + 2 * tokens * d)


def peak_fraction(row: dict, tokens: int, peaks: dict[str, float]) -> str:
    """"GMAC/s per core (fraction of the limit)" of a kernel row, from its px/CPU-s: the float32
    builds against the FMA rate, the 16-bit ones against the best 16-bit multiply-add rate."""
    impl = row.get("implementation", "")
    if not impl.startswith("cpu kernel, "):
        return "-"
    name = impl.removeprefix("cpu kernel, ").split(" ", 1)[0]
    limit = "int16" if KERNEL_VARIANTS[name].precisions == ("bfloat16",) else "float32"
    gmac = row["px_cpu_s"] * macs_per_pixel(tokens) / 1e9
    return f"{gmac:.1f} ({gmac / peaks[limit]:.0%} of {limit} {peaks[limit]:.0f})"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------ the published-style baseline

def published_style_model(spec, weights: Path):
    """SpecTf as the published deployment runs it: standard nn.MultiheadAttention returning weights.

    Written from the architecture description; submodule names follow the official state_dict so
    the official file loads strictly.
    """
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, d: int, h: int) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(d, h, batch_first=True)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, weights = self.attention(x, x, x, need_weights=True)
            assert weights is not None
            return out, weights

    class FF(nn.Module):
        def __init__(self, d: int, f: int) -> None:
            super().__init__()
            self.linear1 = nn.Linear(d, f)
            self.linear2 = nn.Linear(f, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear2(nn.functional.gelu(self.linear1(x)))

    class Layer(nn.Module):
        def __init__(self, d: int, h: int, f: int) -> None:
            super().__init__()
            self.attention = Attention(d, h)
            self.ff = FF(d, f)
            self.norm1 = nn.LayerNorm(d)
            self.norm2 = nn.LayerNorm(d)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            a, weights = self.attention(self.norm1(x))
            return self.ff(self.norm2(a)), weights

    class Embed(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.linear = nn.Linear(2, d)

    class Published(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spectral_embed = Embed(spec.embed_dim)
            self.layers = nn.ModuleList([Layer(spec.embed_dim, spec.num_heads, spec.ff_dim)])
            self.head = nn.Linear(spec.embed_dim, 2)

        def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Probabilities and, as the published model does, the attention weights."""
            x = torch.tanh(self.spectral_embed.linear(tokens))
            weights = torch.empty(0)
            for layer in self.layers:
                x, weights = layer(x)
            return torch.softmax(self.head(x.amax(dim=1)), dim=-1), weights

    m = Published()
    m.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return m.eval()


# ------------------------------------------------------------------ one variant (subprocess)

def worker(variant: str, data: Path, pixels: int, out: Path, threads: int) -> None:
    import torch

    from l2b_mask.algorithm.model import load_model
    from l2b_mask.kernels.calibrate import ENV_VARIANT
    from l2b_mask.spec import ModelSpec

    torch.set_num_threads(threads)
    spec = ModelSpec.load()
    rho_all = np.load(data / "rho.npy", mmap_mode="r")
    band = torch.from_numpy(np.load(data / "band.npy"))
    rho = torch.from_numpy(np.array(rho_all[:pixels]))  # a copy: the memory map is read-only
    n = rho.shape[0]
    rss0 = _rss_mb()
    info: dict = {}

    if variant.startswith("published"):
        dtype = torch.bfloat16 if variant.endswith("bf16") else torch.float32
        m = published_style_model(spec, spec.weights_path).to(dtype)
        with torch.inference_mode():
            tokens_example = torch.zeros(8, band.shape[0], 2, dtype=dtype)
            scripted = torch.jit.optimize_for_inference(torch.jit.script(m))
            scripted(tokens_example)

        def run(x: torch.Tensor) -> torch.Tensor:
            outs = []
            with torch.inference_mode():
                for s in range(0, x.shape[0], 4096):
                    r = x[s:s + 4096]
                    # the published script builds tokens in the model dtype (band term included)
                    tok = torch.stack((r.to(dtype), band.to(dtype).expand(r.shape[0], -1)), -1)
                    outs.append(scripted(tok)[0][:, 1].float())
            return torch.cat(outs)
    else:
        model = load_model(spec)
        if variant.startswith("torch-sdpa"):
            model.set_precision("bfloat16" if "bf16" in variant else "float32", backend="torch")
            batch = int(variant.rsplit("-b", 1)[1])
        else:
            precision, _, pin = variant.removeprefix("kernel-").partition(":")
            if pin:
                os.environ[ENV_VARIANT] = pin
            model.set_precision(precision, backend="kernel")
            batch = 4096
        info["kernel"] = model.uses_kernel()
        info["implementation"] = model.implementation()

        def run(x: torch.Tensor) -> torch.Tensor:
            outs = []
            with torch.inference_mode():
                for s in range(0, x.shape[0], batch):
                    outs.append(model(x[s:s + batch], band))
            return torch.cat(outs)

    run(rho[:64])                                     # warm-up (and kernel load)
    c0, t0 = _cpu_s(), time.perf_counter()
    p = run(rho)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    np.save(out.with_suffix(".npy"), p.numpy())
    info.update(pixels=n, wall_s=wall, px_s=n / wall, px_cpu_s=n / cpu, rss_before_mb=rss0,
                peak_rss_mb=_rss_mb(), threads=threads)
    out.write_text(json.dumps(info))


def e2e_worker(scene_dir: Path, precision: str, out: Path, threads: int) -> None:
    import torch

    from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference
    from l2b_mask.inputs.scene import Scene
    from l2b_mask.spec import ModelSpec

    torch.set_num_threads(threads)
    rdn = next(scene_dir.glob("*_rdn_*.hdr"))
    obs = next(scene_dir.glob("*_obs_*.hdr"))
    settings = InferenceSettings(device="cpu", precision=precision)
    model = CloudModel.load(ModelSpec.load(), settings)
    si = SceneInference(Scene.open(rdn, obs), model)
    t0 = time.perf_counter()
    p = si.run(settings.lines_per_block)
    wall = time.perf_counter() - t0
    out.write_text(json.dumps(dict(lines=p.shape[0], samples=p.shape[1], valid=int(np.isfinite(p).sum()),
                                   wall_s=wall, peak_rss_mb=_rss_mb(), kernel=model.model.uses_kernel())))


# ------------------------------------------------------------------ driver

def prepare(folder: Path, lines: int, samples: int) -> tuple[Path, int]:
    from l2b_mask.algorithm.inference import CloudModel, InferenceSettings, SceneInference, pixels_with_value
    from l2b_mask.algorithm.reflectance import toa_reflectance
    from l2b_mask.inputs.scene import Scene
    from l2b_mask.spec import ModelSpec
    from l2b_mask.synthetic.scene import generate_acquisition

    acq = generate_acquisition(folder / "scene", lines=lines, samples=samples, seed=7, cloud_fraction=0.4)
    scene = Scene.open(acq.radiance, acq.observation)
    si = SceneInference(scene, CloudModel.load(ModelSpec.load(), InferenceSettings(device="cpu")))
    rhos = []
    with scene.radiance_reader() as rdn, scene.observation_reader() as obs:
        for start in range(0, scene.lines, 64):
            stop = min(start + 64, scene.lines)
            r = rdn.read_lines(start, stop, si.bands)
            z = obs.read_band(start, stop, scene.solar_zenith_band)
            ok = pixels_with_value(r, z, scene.radiance_nodata, scene.observation_nodata)
            rhos.append(toa_reflectance(r[ok], z[ok], si.earth_sun_au, si.band_irradiance))
    rho = np.concatenate(rhos).astype(np.float32)
    # interleave the pixels so that a prefix subset is representative of the whole scene
    order = np.random.default_rng(0).permutation(rho.shape[0])
    np.save(folder / "rho.npy", rho[order])
    np.save(folder / "band.npy", si.band_term.numpy())
    return folder / "scene", rho.shape[0]


def why_not_here(path: str) -> str | None:
    """None when this CPU runs the path, else why not (a kernel precision with no variant here, a
    pinned variant whose instructions the CPU lacks, no compiler, not x86-64)."""
    from l2b_mask import kernels
    from l2b_mask.kernels import selection

    if not path.startswith("kernel-"):
        return None
    precision, _, pin = path.removeprefix("kernel-").partition(":")
    if pin:
        return kernels.variant_reason(pin)
    return selection.unavailable_reason(precision)


def _runnable_here() -> list[str]:
    return [v for v in VARIANTS if why_not_here(v) is None]


def _sub(args: list[str], timeout: float = 3600) -> None:
    subprocess.run([sys.executable, str(HERE), *args], check=True, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=32, help="lines of the timing scene (x --samples)")
    ap.add_argument("--samples", type=int, default=1242)
    ap.add_argument("--baseline-pixels", type=int, default=4096, help="pixels timed for the slow paths")
    ap.add_argument("--e2e-lines", type=int, default=256, help="lines of the end-to-end scene (0: skip)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--variants", default=None,
                    help="paths to time (default: all this CPU can run; the others are named, skipped)")
    ap.add_argument("--quick", action="store_true", help="8 x 1242 scene, 1024 baseline pixels, 16-line e2e")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--e2e", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pixels", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.data, a.pixels, a.out, a.threads)
        return 0
    if a.e2e:
        e2e_worker(a.data, a.e2e, a.out, a.threads)
        return 0
    if a.quick:
        a.lines, a.baseline_pixels, a.e2e_lines = 8, 1024, 16
    a.variants_given = a.variants is not None
    if a.variants is None:
        a.variants = ",".join(_runnable_here())

    import torch

    from l2b_mask.kernels.variants import cpu_model
    asked = [v for v in a.variants.split(",") if v]
    unknown = [v for v in asked if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown paths {unknown}; known: {', '.join(VARIANTS)}")
    print(f"# host: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, threads {a.threads}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    variants = []
    for v in asked:
        why = why_not_here(v)
        if why is None:
            variants.append(v)
        else:
            print(f"# skipped {v}: not on this CPU ({why})")
    skipped = [v for v in VARIANTS if v not in asked and why_not_here(v) is not None]
    if skipped and not a.variants_given:
        print(f"# not run on this CPU: {', '.join(skipped)}")
    print(f"# load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="l2b_bench_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        _, n_pixels = prepare(folder, a.lines, a.samples)
        print(f"# timing scene: {a.lines} x {a.samples} synthetic, {n_pixels} pixels with a value "
              f"(prepared in {time.perf_counter() - t0:.0f} s); slow paths: first {a.baseline_pixels} "
              "pixels of a shuffled order")
        results = {}
        for v in variants:
            pixels = min(a.baseline_pixels, n_pixels) if VARIANTS[v][1] else n_pixels
            out = folder / f"{v}.json"
            _sub(["--worker", v, "--data", str(folder), "--pixels", str(pixels), "--out", str(out),
                  "--threads", str(a.threads)])
            results[v] = json.loads(out.read_text())
            results[v]["p"] = np.load(out.with_suffix(".npy"))
            r = results[v]
            ran = f" ran: {r['implementation']}" if "implementation" in r else ""
            print(f"#   {v}: {r['px_s']:.0f} px/s ({r['pixels']} px, {r['wall_s']:.1f} s, load "
                  f"{os.getloadavg()[0]:.1f}){ran}", flush=True)
        ref = (results.get("kernel-float32") or results.get("torch-sdpa-fp32-b256")
               or results.get("torch-sdpa-fp32-b4096") or next(iter(results.values()), None))
        if ref is None:
            print("# nothing ran")
            return 0
        sys.path.insert(0, str(HERE.parent))
        from cpu_peak import peaks as cpu_peaks
        peaks = cpu_peaks()
        tokens = int(np.load(folder / "band.npy").shape[0])
        print(f"# one core's limits (cpu_peak.py): {peaks} GMAC/s; {macs_per_pixel(tokens) / 1e6:.1f} M "
              f"multiply-adds per pixel at {tokens} tokens; dP against: {ref.get('implementation', '')}")
        base = {k: results[k]["px_s"] for k in ("published-bf16", "published-fp32") if k in results}
        rows = []
        head = (f"| path | what | pixels | px/s | px/CPU-s | x published bf16 | x published fp32 "
                f"| peak RSS MB (before run) | max abs dP vs float32 | mask flips @{THRESHOLD} "
                f"| GMAC/s per core (of the limit) |")
        print("\n" + head + "\n|" + "---|" * 11)
        for v in variants:
            r = results[v]
            k = min(len(r["p"]), len(ref["p"]))
            dp = np.abs(r["p"][:k].astype(np.float64) - ref["p"][:k])
            flips = ((r["p"][:k] > THRESHOLD) != (ref["p"][:k] > THRESHOLD)).mean() * 100
            xb = f"{r['px_s'] / base['published-bf16']:.1f}" if "published-bf16" in base else "-"
            xf = f"{r['px_s'] / base['published-fp32']:.1f}" if "published-fp32" in base else "-"
            row = (f"| {v} | {VARIANTS[v][0]} | {r['pixels']} | {r['px_s']:.0f} | {r['px_cpu_s']:.0f} "
                   f"| {xb} | {xf} | {r['peak_rss_mb']:.0f} ({r['rss_before_mb']:.0f}) | {dp.max():.2e} "
                   f"| {flips:.3f}% | {peak_fraction(r, tokens, peaks)} |")
            print(row)
            rows.append({k2: v2 for k2, v2 in r.items() if k2 != "p"}
                        | {"variant": v, "max_dp": float(dp.max()), "flips_pct": float(flips)})
        e2e = []
        if a.e2e_lines:
            t0 = time.perf_counter()
            from l2b_mask.synthetic.scene import generate_acquisition
            acq = generate_acquisition(folder / "e2e", lines=a.e2e_lines, samples=1242, seed=11,
                                       cloud_fraction=0.4)
            print(f"\n# end to end: SceneInference.run, {a.e2e_lines} x 1242 synthetic scene "
                  f"(generated in {time.perf_counter() - t0:.0f} s), extrapolated to 1280 lines")
            print("| precision | kernel | pixels with value | wall s | px/s | 1280 x 1242 extrapolated "
                  "| peak RSS MB |")
            print("|---|---|---|---|---|---|---|")
            for precision in ("float32", "float32-fastexp", "bfloat16"):
                out = folder / f"e2e-{precision}.json"
                _sub(["--e2e", precision, "--data", str(acq.radiance.parent), "--out", str(out),
                      "--threads", str(a.threads)])
                r = json.loads(out.read_text())
                full = r["wall_s"] * 1280 / r["lines"]
                print(f"| {precision} | {r['kernel']} | {r['valid']} | {r['wall_s']:.1f} | "
                      f"{r['valid'] / r['wall_s']:.0f} | {full / 60:.1f} min (extrapolated) "
                      f"| {r['peak_rss_mb']:.0f} |")
                e2e.append(r | {"precision": precision, "extrapolated_1280_s": full})
        print(f"\n# load average at end: {os.getloadavg()}")
        if a.json:
            a.json.write_text(json.dumps({"rows": rows, "e2e": e2e, "loadavg_end": os.getloadavg()},
                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
