"""The browse image: a small true-colour PNG quicklook with the cloud mask drawn over it.

Red, green and blue are the radiance bands nearest 650, 560 and 470 nm (`browse_bands`), read
block by block of lines (three bands kept, so memory is bounded by one block and the output image,
never the cube), or taken from those bands as a caller that streamed the radiance kept them
(`browse_radiance`: a PGE run reads its radiance once). Scenes larger than `max_side` are reduced
by area averaging: each browse pixel is the mean of the swath pixels that fall in it. Each channel
gets a robust percentile stretch (2-98 %, taken over clear pixels when there are enough of them,
so that bright clouds do not darken the ground) and a gamma. Each layer with a browse colour in
the layer table (`layers.LAYERS`) is blended in, in table order, in proportion to its share of the
browse pixel: cloud in magenta, cloud shadow (when made) in amber, a second colour that stands out
on dark ground; pixels with no value are transparent (alpha 0, colour black).

Both colours must read at the size a catalogue shows the browse (often half of it, or less):
the shadow fill is stronger (70 %) than the cloud's, because a half-tone amber over the dark
ground a shadow covers turns olive-brown; and the inner edge of every cloud and shadow region
(browse pixels at least half cloudy, or shadowed) is drawn opaque, 1 px wide and 2 px on a
browse over 500 px, so that a thin shadow is wholly opaque amber and survives being shown at
half size. The edge lies inside the region: no pixel is coloured that is not mask.

Below the image, a legend panel (white, opaque) drawn with matplotlib: the colours with their
meaning (cloud, cloud shadow when given, no value), a scale bar and the size of a browse pixel
on the ground (the location's mean ground spacing of adjacent pixels, times the reduction;
EMIT's nominal 60 m, said so, without a location). The image rows and columns stay those of
the swath (scaled), so the image is `rgba[:rows, :cols]` of the PNG.
PNG is written by GDAL's PNG driver.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from l2b_mask.algorithm.geometry import NOMINAL_PIXEL_SIZE_M
from l2b_mask.errors import InputProductError, OutputError
from l2b_mask.inputs.envi import EnviHeader
from l2b_mask.inputs.formats import Raster, open_raster, raster_reader
from l2b_mask.nodata import FLAG_NO_VALUE
from l2b_mask.products.layers import BrowseColour, Layers, layer

MAX_SIDE = 1000  # pixels on the longer side of a browse image

BROWSE_WAVELENGTHS_NM = (650.0, 560.0, 470.0)
_CLOUD, _SHADOW = layer("flag").browse, layer("shadow").browse  # colours: the layer table's
assert _CLOUD is not None and _SHADOW is not None
CLOUD_RGB, CLOUD_ALPHA = _CLOUD.rgb, _CLOUD.alpha
SHADOW_RGB, SHADOW_ALPHA = _SHADOW.rgb, _SHADOW.alpha
# A swath layer and how the browse draws it; the first one drawn is the cloud flag.
Overlay = tuple[np.ndarray, BrowseColour]
EDGE_WIDTH_PX = (1, 2)  # the opaque inner edge of a region; 2 px on a browse over 500 px
LEGEND_HEIGHT = 44  # px: two rows of text below the image
LEGEND_MIN_WIDTH = 300  # px: the narrowest PNG that holds the legend
LEGEND_FONT_PX = 12.0
STRETCH_PERCENTILES = (2.0, 98.0)
GAMMA = 1.8  # output = stretched ** (1 / GAMMA): lifts dark ground, as screens expect
_RADIANCE_FILL_BELOW = -9990.0  # EMIT: radiance <= -9990 is fill
_BLOCK_BYTES = 32 << 20  # at most this much radiance read at once
_MIN_CLEAR_SHARE = 0.05


def _radiance_raster(radiance: Path | str | Raster) -> Raster:
    """The radiance's header (ENVI) or description (granule): the caller's, opened once for a
    run, or opened here from its path."""
    return open_raster(radiance) if isinstance(radiance, str | Path) else radiance


def browse_bands(radiance: Path | str | Raster) -> list[int]:
    """0-based radiance band indices nearest 650, 560 and 470 nm (ENVI header `wavelength`,
    or a granule's `sensor_band_parameters/wavelengths`)."""
    header = _radiance_raster(radiance)
    if not isinstance(header, EnviHeader):  # an LP DAAC granule: checked, in nm
        wl = header.wavelengths_nm
    else:
        wl = header.float_list("wavelength")
        units = str(header.meta.get("wavelength units", "nanometers")).strip().lower()
        if wl is not None and (units.startswith("micro")
                               or (units in ("", "unknown") and np.nanmax(wl) < 100)):
            wl = wl * 1000.0
    if wl is None or wl.size != header.bands:
        raise InputProductError(header.header_path, "radiance header has no 'wavelength' for "
                                                    "every band; the browse needs them")
    return [int(np.argmin(np.abs(wl - target))) for target in BROWSE_WAVELENGTHS_NM]


def browse_size(lines: int, samples: int, max_side: int) -> tuple[int, int]:
    """(rows, cols) of the browse: the scene's, scaled down so the longer side is <= max_side."""
    if max_side < 1:
        raise ValueError(f"max_side must be positive, not {max_side}")
    scale = min(1.0, max_side / max(lines, samples))
    return (min(max_side, max(1, round(lines * scale))),
            min(max_side, max(1, round(samples * scale))))


def overlays_of(layers: Layers) -> list[Overlay]:
    """The layers the browse draws, in table order: those with a colour that were made."""
    return [(layers[row.name], row.browse) for row in layers.table
            if row.browse is not None and layers.made(row.name)]


def default_overlays(flag: np.ndarray, shadow: np.ndarray | None) -> list[Overlay]:
    """The flag, and the shadow when given, in the layer table's colours."""
    return [(flag, _CLOUD)] + ([(np.asarray(shadow), _SHADOW)] if shadow is not None else [])


def _rgb_blocks(header: Raster, bands: list[int], browse_radiance: np.ndarray | None
                ) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, (lines, samples, 3) float64 radiance) of the browse bands, a block of lines
    at a time: read from the file, or sliced from `browse_radiance` when the caller kept them."""
    lines, samples = header.lines, header.samples
    if browse_radiance is not None and browse_radiance.shape != (lines, samples, len(bands)):
        raise ValueError(f"browse radiance is {browse_radiance.shape}, the radiance "
                         f"{lines} x {samples} x {len(bands)} bands")
    step = max(1, _BLOCK_BYTES // (samples * header.bands * header.dtype.itemsize))
    with raster_reader(header) if browse_radiance is None else nullcontext() as reader:
        for start in range(0, lines, step):
            stop = min(lines, start + step)
            yield start, stop, (reader.read_lines(start, stop, bands, np.float64)
                                if browse_radiance is None
                                else browse_radiance[start:stop].astype(np.float64))


def _accumulate(header: Raster, flag: np.ndarray, rows: int, cols: int,
                bands: list[int], overlays: Sequence[Overlay] = (),
                browse_radiance: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Area sums per browse pixel: (rgb sums (rows, cols, 3), valid counts, and per overlay
    the count of its drawn value)."""
    lines, samples = header.lines, header.samples
    if flag.shape != (lines, samples):
        raise ValueError(f"flag is {flag.shape}, the radiance {lines} x {samples}")
    nodata = header.nodata
    col_of = (np.arange(samples) * cols) // samples
    rgb = np.zeros((rows, cols, 3), np.float64)
    valid_n = np.zeros((rows, cols), np.int64)
    drawn_n = [np.zeros((rows, cols), np.int64) for _ in overlays]
    for start, stop, block in _rgb_blocks(header, bands, browse_radiance):
        f = flag[start:stop]
        ok = np.isfinite(block).all(axis=2) & (block > _RADIANCE_FILL_BELOW).all(axis=2)
        if nodata is not None:
            ok &= (block != nodata).all(axis=2)
        ok &= f != FLAG_NO_VALUE
        row_of = (np.arange(start, stop) * rows) // lines
        r_idx = np.broadcast_to(row_of[:, None], ok.shape)[ok]
        c_idx = np.broadcast_to(col_of[None, :], ok.shape)[ok]
        np.add.at(rgb, (r_idx, c_idx), block[ok])
        np.add.at(valid_n, (r_idx, c_idx), 1)
        for count, (array, colour) in zip(drawn_n, overlays, strict=True):
            np.add.at(count, (r_idx, c_idx),
                      (array[start:stop][ok] == colour.value).astype(np.int64))
    return rgb, valid_n, drawn_n


def stretch(rgb: np.ndarray, valid: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Per-channel percentile stretch to [0, 1] and gamma; percentiles over `reference` pixels
    (default: the valid ones)."""
    ref = valid if reference is None else reference
    out = np.zeros(rgb.shape, np.float64)
    if not ref.any():
        return out
    for ch in range(rgb.shape[-1]):
        lo, hi = np.percentile(rgb[..., ch][ref], STRETCH_PERCENTILES)
        span = hi - lo if hi > lo else 1.0
        out[..., ch] = np.clip((rgb[..., ch] - lo) / span, 0.0, 1.0) ** (1.0 / GAMMA)
    out[~valid] = 0.0
    return out


def compose(stretched: np.ndarray, cloud_share: np.ndarray, valid: np.ndarray,
            shadow_share: np.ndarray | None = None) -> np.ndarray:
    """(rows, cols, 4) uint8 RGBA: the stretched image with cloud (then shadow) blended in,
    alpha 0 where no value. A fully cloudy pixel is `(1 - CLOUD_ALPHA) * colour + CLOUD_ALPHA
    * magenta`; shadow and cloud never share a swath pixel, so at most one tints it."""
    shares = [(cloud_share, _CLOUD)]
    if shadow_share is not None:
        shares.append((shadow_share, _SHADOW))
    return blend(stretched, valid, shares)


def blend(stretched: np.ndarray, valid: np.ndarray,
          shares: Sequence[tuple[np.ndarray, BrowseColour]]) -> np.ndarray:
    """(rows, cols, 4) uint8 RGBA: the stretched image with each colour blended in, in order,
    in proportion to its share of the browse pixel; alpha 0 where no value."""
    colour = stretched * 255.0
    for share, paint in shares:
        a = (paint.alpha * np.clip(share, 0.0, 1.0))[..., None]
        colour = colour * (1.0 - a) + np.asarray(paint.rgb) * a
    rgba = np.zeros((*valid.shape, 4), np.uint8)
    rgba[..., :3] = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    rgba[..., 3] = np.where(valid, 255, 0).astype(np.uint8)
    rgba[~valid, :3] = 0
    return rgba


def draw_edges(rgba: np.ndarray, share: np.ndarray, colour: tuple[float, float, float],
               width: int) -> np.ndarray:
    """`rgba` with the inner edge (`width` px) of the regions where `share` >= 0.5 opaque in
    `colour`: a region narrower than 2 * `width` is wholly opaque. Pixels without a value
    (alpha 0) stay untouched."""
    from scipy import ndimage

    region = share >= 0.5
    if not region.any():
        return rgba
    inner = ndimage.binary_erosion(region, structure=np.ones((3, 3), bool), iterations=width,
                                   border_value=1)
    edge = region & ~inner & (rgba[..., 3] > 0)
    out = rgba.copy()
    out[edge, :3] = np.asarray(colour, np.uint8)
    return out


def edge_width(rows: int, cols: int) -> int:
    """Opaque edge width: 2 px once the browse is over 500 px (shown at half size, 1 px)."""
    return EDGE_WIDTH_PX[1] if max(rows, cols) > 500 else EDGE_WIDTH_PX[0]


def image_limits(max_side: int) -> tuple[int, int]:
    """(rows, cols) the image may take in a PNG of at most `max_side` px with its legend."""
    if max_side < LEGEND_MIN_WIDTH:
        raise ValueError(f"max_side {max_side} is below the {LEGEND_MIN_WIDTH} px the legend needs")
    return max_side - LEGEND_HEIGHT, max_side


def render_browse(radiance: Path | str | Raster, flag: np.ndarray, *, max_side: int = MAX_SIDE,
                  shadow: np.ndarray | None = None,
                  overlays: Sequence[Overlay] | None = None,
                  browse_radiance: np.ndarray | None = None) -> np.ndarray:
    """The browse image without its legend, (rows, cols, 4) uint8 RGBA, at most `max_side`
    px a side: the swath reduced, stretched, each overlay (`overlays_of(layers)`; default the
    flag, and the shadow when given) blended and edged. `browse_radiance`: the (lines, samples,
    3) radiance of `browse_bands(radiance)` as already read (float32), instead of reading
    it from the file (the same image)."""
    flag = np.asarray(flag)
    overlays = default_overlays(flag, shadow) if overlays is None else overlays
    header = _radiance_raster(radiance)
    rows, cols = browse_size(header.lines, header.samples, max_side)
    sums, valid_n, drawn_n = _accumulate(header, flag, rows, cols, browse_bands(header), overlays,
                                         browse_radiance)
    valid = valid_n > 0
    mean = np.zeros_like(sums)
    mean[valid] = sums[valid] / valid_n[valid][:, None]
    shares = []
    for count in drawn_n:
        share = np.zeros(valid.shape)
        share[valid] = count[valid] / valid_n[valid]
        shares.append(share)
    # the stretch is taken over clear ground: browse pixels less than half cloud
    clear = valid & (shares[0] < 0.5) if shares else valid
    reference = clear if clear.sum() >= max(1, _MIN_CLEAR_SHARE * valid.sum()) else valid
    paints = [paint for _, paint in overlays]
    rgba = blend(stretch(mean, valid, reference), valid, list(zip(shares, paints, strict=True)))
    width = edge_width(rows, cols)
    for share, paint in zip(shares, paints, strict=True):
        rgba = draw_edges(rgba, share, paint.rgb, width)
    return rgba


def nice_length_m(most_m: float) -> float:
    """The longest 1, 2 or 5 x 10^k metres not above `most_m` (a scale bar's length)."""
    if not np.isfinite(most_m) or most_m <= 0:
        raise ValueError(f"no scale bar fits in {most_m} m")
    power = 10.0 ** np.floor(np.log10(most_m))
    return float(max(m * power for m in (1.0, 2.0, 5.0) if m * power <= most_m))


def _metres(value: float) -> str:
    return f"{value / 1000:g} km" if value >= 1000 else f"{value:g} m"


def pixel_size_text(pixel_m: float, swath_pixel_m: float | None) -> str:
    """What one browse pixel is on the ground; `swath_pixel_m` None: EMIT's nominal size."""
    swath = NOMINAL_PIXEL_SIZE_M if swath_pixel_m is None else swath_pixel_m
    text = f"pixel {pixel_m:.0f} m"
    if abs(pixel_m - swath) > 0.5:  # the scene was reduced
        text += f" (swath {swath:.0f} m)"
    return text + (" (nominal)" if swath_pixel_m is None else "")


def legend_panel(width: int, pixel_m: float, swath_pixel_m: float | None,
                 with_shadow: bool, drawn: Sequence[BrowseColour] | None = None) -> np.ndarray:
    """(LEGEND_HEIGHT, width, 4) uint8: the colours' meaning and the scale, drawn by
    matplotlib (its default style and bundled DejaVu Sans, so the pixels do not depend on
    the user's matplotlibrc). `drawn`: the colours drawn (default: cloud, and shadow when
    `with_shadow`)."""
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    h, pt, dpi = LEGEND_HEIGHT, LEGEND_FONT_PX * 72.0 / 100.0, 100.0
    with mpl.rc_context():
        mpl.rcdefaults()
        fig = Figure(figsize=(width / dpi, h / dpi), dpi=dpi, facecolor="white")
        canvas = FigureCanvasAgg(fig)
        renderer = canvas.get_renderer()
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0), xlim=(0, width), ylim=(h, 0))
        ax.set_axis_off()
        if drawn is None:
            drawn = [_CLOUD, _SHADOW] if with_shadow else [_CLOUD]
        entries = [(c.label, np.asarray(c.rgb) / 255) for c in drawn] + [("no value", None)]
        x = 6.0
        for label, colour in entries:
            if colour is None:  # a grey and white checker: transparent, as image editors draw it
                for i, j in np.ndindex(2, 2):
                    ax.add_patch(Rectangle((x + 6 * i, 4 + 6 * j), 6, 6, lw=0,
                                           fc="#c8c8c8" if (i + j) % 2 else "white"))
                ax.add_patch(Rectangle((x, 4), 12, 12, fc="none", ec="black", lw=0.8))
            else:
                ax.add_patch(Rectangle((x, 4), 12, 12, fc=colour, ec="black", lw=0.8))
            t = ax.text(x + 17, 10, label, fontsize=pt, va="center", family="DejaVu Sans")
            x += 17 + t.get_window_extent(renderer=renderer).width + 14
        bar_m = nice_length_m(0.2 * width * pixel_m)
        bar_px = bar_m / pixel_m
        ax.add_patch(Rectangle((6, 29), bar_px, 5, fc="black", lw=0))
        ax.add_patch(Rectangle((6 + bar_px / 2, 29), bar_px / 2, 5, fc="white", ec="black",
                               lw=0.8))
        ax.text(12 + bar_px, 31.5, f"{_metres(bar_m)}   {pixel_size_text(pixel_m, swath_pixel_m)}",
                fontsize=pt, va="center", family="DejaVu Sans")
        canvas.draw()
        return np.asarray(canvas.buffer_rgba(), np.uint8)[:h, :width].copy()


def with_legend(image: np.ndarray, lines: int, samples: int, swath_pixel_m: float | None,
                with_shadow: bool, drawn: Sequence[BrowseColour] | None = None) -> np.ndarray:
    """The PNG's pixels: `image` top left (transparent right of it when the legend is wider),
    the legend panel below."""
    rows, cols = image.shape[:2]
    width = max(cols, LEGEND_MIN_WIDTH)
    if swath_pixel_m is not None and not (np.isfinite(swath_pixel_m) and swath_pixel_m > 0):
        swath_pixel_m = None  # no usable spacing from the location: say nominal
    swath = NOMINAL_PIXEL_SIZE_M if swath_pixel_m is None else swath_pixel_m
    pixel_m = swath * (lines / rows + samples / cols) / 2.0  # browse pixel on the ground
    out = np.zeros((rows + LEGEND_HEIGHT, width, 4), np.uint8)
    out[:rows, :cols] = image
    out[rows:] = legend_panel(width, pixel_m, swath_pixel_m, with_shadow, drawn)
    return out


def write_png(path: Path | str, rgba: np.ndarray) -> None:
    """Write an (rows, cols, 3 or 4) uint8 array as PNG with GDAL (zlib level 9)."""
    from osgeo import gdal

    gdal.UseExceptions()
    rows, cols, nb = rgba.shape
    mem: Any = gdal.GetDriverByName("MEM").Create("", cols, rows, nb, gdal.GDT_Byte)
    interp = [gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, gdal.GCI_AlphaBand]
    for i in range(nb):
        band = mem.GetRasterBand(i + 1)
        band.WriteArray(np.ascontiguousarray(rgba[..., i]))
        band.SetColorInterpretation(interp[i])
    out = gdal.GetDriverByName("PNG").CreateCopy(str(path), mem, strict=1, options=["ZLEVEL=9"])
    out.FlushCache()
    out = None
    Path(f"{path}.aux.xml").unlink(missing_ok=True)  # PAM side-car: nothing in it for a PNG


def write_browse_png(path: Path | str, radiance: Path | str | Raster, flag: np.ndarray, *,
                     max_side: int = MAX_SIDE, shadow: np.ndarray | None = None,
                     pixel_size_m: float | None = None,
                     overlays: Sequence[Overlay] | None = None,
                     browse_radiance: np.ndarray | None = None) -> None:
    """Write the browse PNG of an acquisition: RGBA, longer side <= `max_side` pixels, the
    image on top and its legend below.

    `flag` is the (lines, samples) uint8 swath flag (0 clear, 1 cloud, 255 no value); `shadow`
    the shadow flag (1 shadow), drawn in amber when given; `pixel_size_m` the swath's ground
    spacing (`geometry.ground_spacing(...).mean_m`), None for EMIT's nominal 60 m; `overlays`
    (`overlays_of(layers)`) instead say which layers are drawn, in which colours;
    `browse_radiance` the browse bands' radiance already read (`render_browse`).
    A failure leaves no file behind (`OutputError`); a radiance without wavelengths is an
    `InputProductError`.
    """
    p = Path(path)
    max_rows, max_cols = image_limits(max_side)
    header = _radiance_raster(radiance)
    scale = min(1.0, max_rows / header.lines, max_cols / header.samples)
    overlays = default_overlays(np.asarray(flag), shadow) if overlays is None else overlays
    image = render_browse(header, flag, overlays=overlays, browse_radiance=browse_radiance,
                          max_side=max(1, int(max(header.lines, header.samples) * scale)))
    drawn = [paint for _, paint in overlays]
    rgba = with_legend(image, header.lines, header.samples, pixel_size_m, _SHADOW in drawn, drawn)
    try:
        write_png(p, rgba)
    except (RuntimeError, OSError) as exc:
        p.unlink(missing_ok=True)
        raise OutputError(p, f"cannot write browse PNG ({exc})") from None


def check_browse(path: Path) -> None:
    """The browse reads back as a PNG of 3-4 bands, at most `MAX_SIDE` pixels (OutputError)."""
    from osgeo import gdal

    try:
        ds = gdal.Open(str(path))
        size = (ds.RasterXSize, ds.RasterYSize, ds.RasterCount, ds.GetDriver().ShortName)
        ds = None
    except Exception as exc:  # noqa: BLE001 - unreadable is an output failure
        raise OutputError(path, f"browse image does not read back ({exc})") from None
    if size[3] != "PNG" or max(size[:2]) > MAX_SIDE or size[2] not in (3, 4):
        raise OutputError(path, f"browse image is not a PNG of at most {MAX_SIDE} px with 3-4 "
                                f"bands ({size})")
