"""Comparing two relevance maps, one of which may be a published (rendered) heatmap.

``python -m caffelrp compare OURS PUBLISHED`` and ``compare(a, b)``. Each side may be a relevance
array (``.npy``, C x H x W or H x W), an ``explain`` sidecar (``STEM.json``: the relevance it
lists), the toolbox's ``_rawhm.txt``, or a rendered heatmap (PNG/JPEG, 8 or 16 bit), which
``caffelrp.decode`` turns back into signed values. Arrays are summed over channels.

Geometry: the common grid is OURS's. PUBLISHED is first cropped (``crop``, its pixel coordinates),
then, without ``align``, resampled (Lanczos) onto that grid when the aspect ratios agree (within
2 %);
with ``align`` a scale and offset of OURS inside PUBLISHED are searched for the best Pearson
correlation (coarse grid on a <= 48-pixel version, then Nelder-Mead at full size from the five
best coarse placements).

Metrics on the common grid (both maps scaled by their largest |value|; pixels outside the
published picture after alignment are left out):

* ``pearson``, ``spearman``: correlation of the values;
* ``ssim``: scikit-image's ``structural_similarity`` (data range 2, its defaults: 7 x 7 uniform
  window, K1 0.01, K2 0.03, sample covariance) when installed, else ``ssim`` below, the same
  formula (Wang et al. 2004, eq. 13) written here;
* ``top_overlap``: IoU of the 1, 5, 10, 20 % pixels of largest value;
* ``sign_agreement``: fraction of equal signs on the pixels both maps call clearly relevant
  (|value| >= ``RELEVANT`` of the largest |value| in each); None when there are none;
* ``decode_residual``: PUBLISHED's mean colour distance to its map (8-bit levels; the larger of
  the two when both were decoded), None when neither side was a picture.
"""
from dataclasses import dataclass
import json
from pathlib import Path

import numpy as np

from .decode import DecodeError, decode_heatmap, get_map
from .errors import CaffeLRPError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
RELEVANT = 0.1               # "clearly relevant": at least 10 % of the largest |value|
TOP_PERCENT = (1, 5, 10, 20)
ASPECT_TOLERANCE = 0.02
OFF_MAP = 32                 # colour distance (8-bit levels) the summary calls "off the map"
FIGURE_CLIP = 99.5           # percentile of |value| shown at full colour in --figure
JSON_KEYS = ("pearson", "spearman", "ssim", "top_overlap", "sign_agreement", "cmap",
             "decode_residual", "alignment", "shape")


class CompareError(CaffeLRPError):
    """An input cannot be read as a relevance map, or the two maps cannot be put on one grid."""


class ColourMapError(CompareError):
    """An unknown colour map was asked for (a usage error)."""


@dataclass
class RelevanceMap:
    values: np.ndarray          # float64 (H, W)
    source: str
    decoded: object = None      # decode.Decoded when it came from a picture


# ------------------------------------------------------------------------------- loading
def _from_array(array, name):
    a = np.asarray(array)
    if a.dtype.kind not in "fiu":
        raise CompareError("%s: a relevance array holds numbers, got dtype %s" % (name, a.dtype))
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.size == 0 or (a.ndim >= 2 and min(a.shape[-2:]) < 2):
        raise CompareError("%s: a relevance map needs at least 2 x 2 pixels, got shape %s"
                           % (name, "x".join(map(str, a.shape))))
    if a.ndim == 3 and a.shape[0] not in (1, 3, 4) and a.shape[2] in (1, 3, 4):
        raise CompareError("%s: shape %s looks like H x W x C; a relevance array is C x H x W "
                           "(transpose it)" % (name, "x".join(map(str, a.shape))))
    if a.ndim == 3:
        a = a.astype(np.float64).sum(axis=0)
    elif a.ndim != 2:
        raise CompareError("%s: a relevance array is C x H x W or H x W, got shape %s"
                           % (name, "x".join(map(str, a.shape)) or "()"))
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise CompareError("%s: the relevance holds NaN or infinite values" % name)
    return a


def _check_cmap(cmap):
    if cmap == "auto":
        return
    try:
        get_map(cmap)
    except DecodeError as e:
        raise ColourMapError(str(e)) from None


def load_map(source, cmap="auto", name=None):
    """A RelevanceMap from a path (.npy, sidecar .json, _rawhm.txt, PNG/JPEG) or an array (2-D/3-D
    relevance, or (H, W, 3) uint8/uint16 RGB, which is decoded)."""
    if isinstance(source, RelevanceMap):
        return source
    if not isinstance(source, (str, Path)):
        a = np.asarray(source)
        label = name or "<array>"
        if a.ndim == 3 and a.shape[2] == 3 and a.dtype in (np.uint8, np.uint16):
            decoded = decode_heatmap(a, cmap, name=label)
            return RelevanceMap(decoded.values, label, decoded)
        return RelevanceMap(_from_array(a, label), label)
    path = Path(source)
    label = str(source)
    if path.is_dir():
        raise CompareError("%s: is a directory, not a relevance map" % label)
    if not path.is_file():
        raise CompareError("%s: no such file" % label)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        decoded = decode_heatmap(path, cmap, name=label)
        return RelevanceMap(decoded.values, label, decoded)
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CompareError("%s: not a readable .npy array: %s" % (label, e)) from None
        return RelevanceMap(_from_array(array, label), label)
    if suffix == ".json":
        return _from_sidecar(path, cmap)
    if suffix == ".txt":
        from .compat import read_rawhm
        try:
            array = read_rawhm(path)
        except (ValueError, IndexError, OSError, UnicodeDecodeError):
            raise CompareError("%s: not a toolbox _rawhm.txt (line 1 the channel count, line 2 "
                               "'H W', then C*H rows of W numbers)" % label) from None
        return RelevanceMap(_from_array(array, label), label)
    raise CompareError("%s: unknown kind of file; give a .npy relevance array, an explain "
                       "sidecar .json, a _rawhm.txt or a PNG/JPEG heatmap" % label)


def _from_sidecar(path, cmap):
    try:
        sidecar = json.loads(path.read_text())
        name = sidecar["outputs"]["relevance"]
    except (ValueError, UnicodeDecodeError):
        raise CompareError("%s: not a JSON file" % path) from None
    except (KeyError, TypeError):
        raise CompareError("%s: not an explain sidecar (it lists no outputs.relevance)"
                           % path) from None
    target = path.parent / name
    loaded = load_map(target, cmap)
    return RelevanceMap(loaded.values, "%s (via %s)" % (target, path), loaded.decoded)


# ------------------------------------------------------------------------------ geometry
def parse_crop(text):
    """'x0,y0,x1,y1' -> a tuple of 4 ints (x1, y1 exclusive)."""
    try:
        box = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1] or min(box) < 0:
        raise ValueError("--crop takes x0,y0,x1,y1 with x0 < x1 and y0 < y1 (pixels, x1 and y1 "
                         "exclusive), got %r" % (text,))
    return box


def crop(values, box, name="map"):
    x0, y0, x1, y1 = box
    h, w = values.shape
    if x1 > w or y1 > h:
        raise CompareError("%s: crop %d,%d,%d,%d reaches outside its %d x %d pixels"
                           % (name, x0, y0, x1, y1, w, h))
    return values[y0:y1, x0:x1]


def resample(values, shape):
    """Lanczos resampling onto (H, W), pixel centres aligned, antialiased when shrinking (Pillow).
    Lanczos rather than bilinear: a published figure enlarged 1.5x and brought back keeps more of
    its detail (measured on the CaffeNet reference, f100 through JPEG: Pearson 0.978 vs 0.967)."""
    if tuple(values.shape) == tuple(shape):
        return values
    from PIL import Image
    img = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.LANCZOS), dtype=np.float64)


def antialiased(values, scale):
    """``values`` blurred for sampling every ``scale`` pixels (no blur when enlarging): a Gaussian
    that takes the 1-pixel sampling to a ``scale``-pixel one, sigma = sqrt(scale^2 - 1) / 2."""
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(values, sigma=0.5 * np.sqrt(scale ** 2 - 1)) if scale > 1 else values


def sample_window(values, shape, scale, offset, order=1):
    """``values`` sampled on a grid of ``shape`` whose pixel (i, j) covers [offset_y + i*scale,
    offset_y + (i+1)*scale) x [offset_x + j*scale, ...) of ``values`` (pixel-corner
    coordinates), by a spline of ``order`` (1 bilinear, for the search; 3 cubic, for the final
    grid); NaN outside. Blur first with ``antialiased`` when scale > 1."""
    from scipy.ndimage import map_coordinates
    ys = offset[1] + (np.arange(shape[0]) + 0.5) * scale - 0.5
    xs = offset[0] + (np.arange(shape[1]) + 0.5) * scale - 0.5
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    h, w = values.shape
    inside = (yy >= -0.5) & (yy <= h - 0.5) & (xx >= -0.5) & (xx <= w - 0.5)
    sampled = map_coordinates(values, [yy, xx], order=order, mode="nearest")
    return np.where(inside, sampled, np.nan)


def _masked_pearson(a, b):
    ok = np.isfinite(b)
    if ok.sum() < 0.6 * a.size:       # at least 60 % of OURS must lie inside PUBLISHED
        return -np.inf
    x, y = a[ok], b[ok]
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else -np.inf


def align(ours, published):
    """Scale and offset of OURS's grid inside PUBLISHED with the best Pearson correlation.

    Returns {"scale": PUBLISHED pixels per OURS pixel, "offset": [x, y] (PUBLISHED pixel
    coordinates of OURS's top-left corner), "pearson": the correlation at that placement}."""
    ha, wa = ours.shape
    hb, wb = published.shape
    fit = min(hb / ha, wb / wa)
    k = max(ha, wa) / 48.0 if max(ha, wa) > 48 else 1.0
    small_shape = (max(int(round(ha / k)), 8), max(int(round(wa / k)), 8))
    small = resample(ours, small_shape)
    kk = ha / small_shape[0]
    coarse = []                                   # (r, scale, ox, oy) of every placement
    for scale in fit * np.geomspace(0.5, 1.5, 23):
        blurred = antialiased(published, scale * kk)
        step = 2.0 * scale * kk
        span_y, span_x = ha * scale, wa * scale
        for oy in np.arange(-0.2 * span_y, hb - 0.8 * span_y + 1e-9, step):
            for ox in np.arange(-0.2 * span_x, wb - 0.8 * span_x + 1e-9, step):
                r = _masked_pearson(small, sample_window(blurred, small_shape, scale * kk,
                                                         (ox, oy)))
                if np.isfinite(r):
                    coarse.append((r, scale, ox, oy))
    if not coarse:
        raise CompareError("no placement of OURS inside PUBLISHED overlaps enough to compare")
    # refine the best few at full size (Nelder-Mead on scale and the centre, which keeps the
    # centre still while the scale changes; the correlation peak of a noisy map is ~1 pixel wide)
    from scipy.optimize import minimize
    coarse.sort(reverse=True)
    best = (-np.inf, None)
    for r0, scale0, ox0, oy0 in coarse[:5]:
        full = antialiased(published, scale0)

        def cost(p):
            s, cx, cy = p
            if s <= 0:
                return 2.0
            r = _masked_pearson(ours, sample_window(full, ours.shape, s,
                                                    (cx - wa * s / 2, cy - ha * s / 2)))
            return -r if np.isfinite(r) else 2.0
        p0 = np.array([scale0, ox0 + wa * scale0 / 2, oy0 + ha * scale0 / 2])
        simplex = np.array([p0, p0 + [0.04 * scale0, 0, 0], p0 + [0, 2.0, 0], p0 + [0, 0, 2.0]])
        res = minimize(cost, p0, method="Nelder-Mead",
                       options={"initial_simplex": simplex, "xatol": 0.02, "fatol": 1e-6,
                                "maxiter": 400})
        if -res.fun > best[0]:
            best = (-res.fun, res.x)
    r, (scale, cx, cy) = best
    ox, oy = cx - wa * scale / 2, cy - ha * scale / 2
    return {"scale": float(scale), "offset": [float(ox), float(oy)], "pearson": float(r)}


def common_grid(ours, published, do_align=False, names=("OURS", "PUBLISHED")):
    """(ours, published on OURS's grid (NaN where it has no data), alignment or None)."""
    if do_align:
        placement = align(ours, published)
        return ours, sample_window(antialiased(published, placement["scale"]), ours.shape,
                                   placement["scale"], placement["offset"], order=3), placement
    (ha, wa), (hb, wb) = ours.shape, published.shape
    if (ha, wa) != (hb, wb) and abs((hb / wb) / (ha / wa) - 1) > ASPECT_TOLERANCE:
        raise CompareError("%s is %d x %d pixels, %s %d x %d: the aspect ratios differ, so one "
                           "cannot be resampled onto the other; pass --align to search scale "
                           "and offset, or --crop x0,y0,x1,y1 to cut PUBLISHED"
                           % (names[0], wa, ha, names[1], wb, hb))
    return ours, resample(published, ours.shape), None


# ------------------------------------------------------------------------------- metrics
def _normalise(v):
    m = np.abs(v).max()
    return v / m if m > 0 else v


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else None


def _spearman(a, b):
    from scipy.stats import rankdata
    return _pearson(rankdata(a), rankdata(b))


def ssim(a, b, data_range=2.0, win_size=7, k1=0.01, k2=0.03):
    """Mean structural similarity of two 2-D maps (Wang et al. 2004, eq. 13): local means,
    variances and covariance over a win_size x win_size uniform window (sample covariance), the
    border of (win_size - 1) / 2 pixels left out of the mean, as scikit-image does by default."""
    from scipy.ndimage import uniform_filter
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(a.shape) < win_size:
        return None
    n = win_size ** 2
    cov_norm = n / (n - 1.0)
    ux, uy = uniform_filter(a, win_size), uniform_filter(b, win_size)
    uxx, uyy, uxy = (uniform_filter(a * a, win_size), uniform_filter(b * b, win_size),
                     uniform_filter(a * b, win_size))
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return float(s[pad:s.shape[0] - pad, pad:s.shape[1] - pad].mean())


def _ssim(a, b):
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return ssim(a, b)
    if min(a.shape) < 7:
        return None
    return float(structural_similarity(a, b, data_range=2.0))


def top_overlap(a, b, percents=TOP_PERCENT):
    """{"p": IoU of the p % pixels of largest value in a and in b} (ties: lower index first)."""
    a, b = a.reshape(-1), b.reshape(-1)
    order_a, order_b = np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")
    out = {}
    for p in percents:
        n = max(1, int(round(a.size * p / 100.0)))
        sa, sb = set(order_a[:n].tolist()), set(order_b[:n].tolist())
        out[str(p)] = len(sa & sb) / len(sa | sb)
    return out


def sign_agreement(a, b, threshold=RELEVANT):
    both = (np.abs(a) >= threshold * np.abs(a).max()) & (np.abs(b) >= threshold * np.abs(b).max())
    if not both.any():
        return None
    return float((np.sign(a[both]) == np.sign(b[both])).mean())


def metrics(ours, published):
    """The agreement of two maps on one grid (NaN in ``published``: no data there)."""
    ok = np.isfinite(published)
    a, b = _normalise(ours), published.copy()
    b[ok] = _normalise(b[ok])
    if ok.all():
        ssim_value = _ssim(a, b)
    else:   # SSIM needs a full rectangle: the bounding box of the valid pixels
        rows, cols = np.where(ok.any(axis=1))[0], np.where(ok.any(axis=0))[0]
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        ssim_value = _ssim(a[box], np.where(ok, b, 0.0)[box])
    av, bv = a[ok], b[ok]
    return {"pearson": _pearson(av, bv), "spearman": _spearman(av, bv), "ssim": ssim_value,
            "top_overlap": top_overlap(av, bv), "sign_agreement": sign_agreement(av, bv)}


# ----------------------------------------------------------------------------------- API
def compare(a, b, cmap="auto", align=False, crop_box=None, details=False):
    """Agreement of relevance map ``a`` (ours) with ``b`` (e.g. a published heatmap).

    ``a``, ``b``: paths (.npy, sidecar .json, _rawhm.txt, PNG/JPEG) or arrays; ``cmap``: the colour
    map of a rendered side ("auto": the best-fitting one); ``align``: search scale and offset of
    ``a`` inside ``b``; ``crop_box``: (x0, y0, x1, y1) cut out of ``b`` first. Returns a dict
    with the keys ``JSON_KEYS``; with ``details`` also the maps themselves (key "maps")."""
    _check_cmap(cmap)
    ours, published = load_map(a, cmap, "a"), load_map(b, cmap, "b")
    pub_values = published.values
    if crop_box is not None:
        pub_values = crop(pub_values, crop_box, published.source)
    grid_a, grid_b, placement = common_grid(ours.values, pub_values, align,
                                            (ours.source, published.source))
    result = metrics(grid_a, grid_b)
    residuals = [m.decoded.residual for m in (ours, published) if m.decoded is not None]
    result.update({
        "cmap": published.decoded.cmap if published.decoded is not None else (
            ours.decoded.cmap if ours.decoded is not None else None),
        "decode_residual": max(residuals) if residuals else None,
        "alignment": placement, "shape": [int(grid_a.shape[0]), int(grid_a.shape[1])]})
    result = {k: result[k] for k in JSON_KEYS}
    if details:
        result["maps"] = {"ours": ours, "published": published, "grid": (grid_a, grid_b),
                          "published_shape": list(pub_values.shape)}
    return result


# -------------------------------------------------------------------------------- figure
def write_figure(path, ours, published, result, titles=("ours", "published (decoded)")):
    """ours | published as decoded | their difference, with a colour bar and the metrics. Each
    map is shown divided by its 99.5th percentile of |value| and clipped (a heavy-tailed map
    divided by its maximum is nearly white); the difference is that of the shown maps."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CaffeLRPError("--figure needs matplotlib: pip install caffelrp[plot]") from None
    import io
    from .files import write_atomically
    def shown(v):   # as explain's overlays: the 99.5th percentile of |value| is full colour
        ok = np.isfinite(v)
        scale = np.percentile(np.abs(v[ok]), FIGURE_CLIP) if ok.any() else 0.0
        return np.clip(v / scale, -1, 1) if scale > 0 else v
    a, b = shown(ours), shown(published)
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6), constrained_layout=True)
    for ax, img, title in zip(axes, (a, b, a - b), titles + ("difference (ours - published)",)):
        im = ax.imshow(img, cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.8, label="relevance / %g%% quantile of |relevance|"
                 % FIGURE_CLIP)
    fig.text(0.5, 0.01, caption(result), ha="center", va="bottom", fontsize=8)
    fig.get_layout_engine().set(rect=(0, 0.08, 1, 0.92))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    from PIL import Image
    small = io.BytesIO()   # a palette PNG: a third of the size, the same picture to the eye
    Image.open(buf).convert("RGB").quantize(colors=128).save(small, format="PNG", optimize=True)
    write_atomically(path, small.getvalue())


def _fmt(v, digits=3):
    return "n/a" if v is None else "%.*f" % (digits, v)


def caption(result):
    top = result["top_overlap"]
    text = ("Pearson %s, Spearman %s, SSIM %s, top-1/5/10/20 %% IoU %s, sign agreement %s"
            % (_fmt(result["pearson"]), _fmt(result["spearman"]), _fmt(result["ssim"]),
               "/".join(_fmt(top[k], 2) for k in ("1", "5", "10", "20")),
               _fmt(result["sign_agreement"])))
    if result["cmap"]:
        text += "; decoded with %s, residual %s" % (result["cmap"],
                                                    _fmt(result["decode_residual"], 1))
    return text


# ----------------------------------------------------------------------------------- CLI
def summary(result, ours_name, published_name, published_shape, ours_map=None,
            published_map=None):
    lines = ["%s vs %s" % (ours_name, published_name)]
    grid = "%d x %d (OURS's grid)" % (result["shape"][1], result["shape"][0])
    if result["alignment"]:
        al = result["alignment"]
        grid += "; aligned: PUBLISHED scale %.3f, offset x %.1f y %.1f" % (
            al["scale"], al["offset"][0], al["offset"][1])
    elif list(published_shape) != result["shape"]:
        grid += "; PUBLISHED resampled from %d x %d" % (published_shape[1], published_shape[0])
    lines.append("grid: " + grid)
    if result["cmap"]:
        lines.append("colour map: %s (decoding residual %.2f of 255 levels)"
                     % (result["cmap"], result["decode_residual"]))
    for label, m in (("OURS", ours_map), ("PUBLISHED", published_map)):
        if m is not None and m.decoded is not None:
            far = float((m.decoded.distance > OFF_MAP).mean()) * 100
            if far >= 0.05:
                lines.append("%s: %.1f %% of the pixels lie more than %d levels off the map "
                             "(low confidence: text, axes or compression)" % (label, far, OFF_MAP))
    top = result["top_overlap"]
    lines.append("pearson %s  spearman %s  ssim %s" % (
        _fmt(result["pearson"]), _fmt(result["spearman"]), _fmt(result["ssim"])))
    lines.append("top-k IoU: " + "  ".join("%s%% %s" % (k, _fmt(top[k])) for k in top)
                 + "   sign agreement %s" % _fmt(result["sign_agreement"]))
    return "\n".join(lines)


def add_parser(subparsers):
    p = subparsers.add_parser(
        "compare", help="agreement of a relevance map with another or with a published heatmap",
        description="Compare OURS with PUBLISHED. Each may be a relevance .npy (C x H x W or "
                    "H x W), an explain sidecar .json, a toolbox _rawhm.txt, or a rendered "
                    "heatmap PNG/JPEG, decoded back to signed relevance by nearest colour. "
                    "Metrics on OURS's grid: Pearson, Spearman, SSIM, top 1/5/10/20 %% IoU, sign "
                    "agreement, decoding residual.")
    p.add_argument("ours", metavar="OURS")
    p.add_argument("published", metavar="PUBLISHED")
    p.add_argument("--cmap", default="auto", metavar="NAME",
                   help="colour map of a rendered heatmap: auto (default: the best-fitting one), "
                        "original, seismic, bwr, jet, gray, hot, caffelrp's maps, or a "
                        "matplotlib map name")
    p.add_argument("--align", action="store_true",
                   help="search the scale and offset of OURS inside PUBLISHED (crops, borders)")
    p.add_argument("--crop", metavar="x0,y0,x1,y1", help="cut PUBLISHED to this box first")
    p.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--figure", metavar="FILE.png",
                   help="ours | published as decoded | difference (needs matplotlib)")
    p.set_defaults(run=run)


def run(args):
    from .cli import UsageError
    from .files import json_bytes, write_atomically
    try:
        box = parse_crop(args.crop) if args.crop else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        result = compare(args.ours, args.published, cmap=args.cmap, align=args.align,
                         crop_box=box, details=True)
    except ColourMapError as e:
        raise UsageError("--cmap: %s" % e) from None
    maps = result.pop("maps")
    print(summary(result, args.ours, args.published, maps["published_shape"], maps["ours"],
                  maps["published"]))
    if args.json:
        write_atomically(args.json, json_bytes(result, args.json))
    if args.figure:
        write_figure(args.figure, *maps["grid"], result)
    return 0

