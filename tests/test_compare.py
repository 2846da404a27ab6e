"""compare / decode / reproduce (issue 10) against the reference data and known renderings."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import caffelrp
from caffelrp import render
from caffelrp.cli import main
from caffelrp.compare import JSON_KEYS, align, compare, sample_window, ssim
from caffelrp.decode import DecodeError, builtin_maps, decode_heatmap, get_map
from caffelrp.reproduce import _READS as READS

CAFFENET_TAGS = ["f0_eps1_beta0_aux0", "f100_eps1_beta0_aux0"]
IMAGES = ["scooter10", "volcano2"]


def reference(shared_reference, image, model="caffenet"):
    folder = shared_reference / "expected" / model / image
    return folder, np.load(folder / "relevance.npz"), json.loads((folder / "runs.json")
                                                                  .read_text())["runs"]


def jpeg_enlarged(path, factor=1.5, quality=75):
    """The PNG enlarged (bicubic) and saved as JPEG, back as uint8 RGB."""
    im = Image.open(path).convert("RGB")
    im = im.resize((int(round(im.width * factor)), int(round(im.height * factor))), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# ------------------------------------------------------------------ the demonstrator's PNGs
@pytest.mark.slow
@pytest.mark.parametrize("tag", CAFFENET_TAGS)
@pytest.mark.parametrize("image", IMAGES)
def test_demonstrator_png_decodes_to_reference(shared_reference, image, tag):
    folder, relevance, _ = reference(shared_reference, image)
    mean = relevance[tag].astype(np.float64).mean(axis=0)
    decoded = decode_heatmap(folder / ("demonstrator_heatmap_%s.png" % tag), cmap="original")
    # the 16-bit PNG holds v/m truncated to 1/65535: measured Pearson > 0.9999999 (bound 0.98)
    assert pearson(decoded.values, mean) >= 0.98
    # auto recognises the map, exactly (residual 0: every pixel lies on the map)
    auto = decode_heatmap(folder / ("demonstrator_heatmap_%s.png" % tag))
    assert auto.cmap == "original" and auto.residual < 1e-6
    # the wrapped blue (spec 1.7: -v/m > 1 written modulo 2^16) is read at face value,
    # -(-v/m - 1); it happens on 2 pixels of volcano2 f0 only (counted from the reference)
    m = mean.max()
    wrapped = -mean / m > 1
    assert int(wrapped.sum()) == (2 if (image, tag) == ("volcano2", CAFFENET_TAGS[0]) else 0)
    face_value = -(-mean[wrapped] / m - 1)
    np.testing.assert_allclose(decoded.values[wrapped], face_value, atol=2 / 65535)
    np.testing.assert_allclose(decoded.values[~wrapped], mean[~wrapped] / m, atol=2 / 65535)


def test_published_figures_are_recognised(shared_reference):
    for name in ("scooter_10_hm.jpg", "volcano2_hm.jpg"):
        decoded = decode_heatmap(shared_reference / "published" / name)
        # measured residuals 1.29 and 1.68 levels; the next best map (gray) 2.7 and 3.8
        assert decoded.cmap == "original" and decoded.residual < 2.5


@pytest.mark.slow
@pytest.mark.parametrize("image", IMAGES)
def test_jpeg_enlarged_against_our_relevance(shared_reference, nets, image):
    folder, _, runs = reference(shared_reference, image)
    net = nets("caffenet")
    x = np.load(folder / "input.npy")[None]
    ours = {}
    for tag in CAFFENET_TAGS:
        run = runs[tag]
        ours[tag] = net.relevance(x, rule=run["relpropformulatype"], eps=run["epsstab"],
                                  beta=run["alphabeta_beta"],
                                  target=[list(run["explained_classes"])])[0]
    pictures = {tag: jpeg_enlarged(folder / ("demonstrator_heatmap_%s.png" % tag))
                for tag in CAFFENET_TAGS}
    f0, f100 = CAFFENET_TAGS
    same = compare(ours[f100], pictures[f100])
    other = compare(ours[f0], pictures[f100])
    assert same["cmap"] == "original"
    # measured: same 0.978 / 0.976 (scooter10 / volcano2), other 0.07 / 0.04
    assert same["pearson"] >= 0.97
    assert other["pearson"] < same["pearson"] - 0.5
    # f0's pixel-scale sign noise does not survive JPEG's 4:2:0 chroma: measured 0.62 / 0.64
    # against f0 and 0.36 / 0.23 against f100; the right formula still wins by > 0.2
    assert compare(ours[f0], pictures[f0])["pearson"] > \
        compare(ours[f100], pictures[f0])["pearson"] + 0.2


# --------------------------------------------------------------------------- colour maps
def known_map(h=48, w=64):
    """Sparse like relevance: a few positive and negative blobs on a near-zero background."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    blobs = [(.3, .6, 1.0, 40), (.7, .3, -0.7, 60), (.5, .8, 0.5, 80), (.8, .75, -0.4, 90)]
    return sum(a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) * k) for cx, cy, a, k in blobs)


@pytest.mark.parametrize("name", sorted(builtin_maps()))
def test_every_builtin_map_round_trips(name):
    v = known_map()
    cmap = get_map(name)
    if not cmap.signed:
        v = np.clip(v, 0, None)
    rgb = render.to_8bit(cmap.render(v / np.abs(v).max()))
    decoded = decode_heatmap(rgb, cmap=name)
    # measured >= 0.999 for every map (8-bit rounding only); bound 0.99
    assert pearson(decoded.values, v) >= 0.99
    assert decoded.residual < 1.0


@pytest.mark.parametrize("name", sorted(render.COLORMAPS))
def test_caffelrp_renderings_decode_with_auto(name):
    v = known_map()
    if name == "hot":
        v = np.clip(v, 0, None)
    scale = render.heatmap_scale(v, name)[0]
    decoded = decode_heatmap(render.to_8bit(render.colorize(v, scale, name)))
    assert pearson(decoded.values, v) >= 0.99
    assert decoded.residual < 1.0


@pytest.mark.parametrize("name", ["seismic", "bwr", "jet", "gray", "hot"])
def test_builtin_paper_maps_match_matplotlib(name):
    matplotlib = pytest.importorskip("matplotlib")
    cmap = get_map(name)
    u = (cmap.t + 1) / 2 if cmap.signed else cmap.t
    theirs = np.asarray(matplotlib.colormaps[name](u))[:, :3]
    # matplotlib's own table has 256 entries (steps of 1/255): half a step of its ramps
    assert np.abs(theirs - cmap.colours).max() < 0.02
    rgb = render.to_8bit(np.asarray(matplotlib.colormaps[name](
        (known_map() / np.abs(known_map()).max() + 1) / 2 if cmap.signed else
        np.clip(known_map(), 0, None) / known_map().max()))[..., :3])
    decoded = decode_heatmap(rgb)
    truth = known_map() if cmap.signed else np.clip(known_map(), 0, None)
    assert pearson(decoded.values, truth) >= 0.99


def test_any_matplotlib_map_by_name():
    matplotlib = pytest.importorskip("matplotlib")
    v = known_map()
    rgb = render.to_8bit(np.asarray(matplotlib.colormaps["viridis"]((v / np.abs(v).max() + 1)
                                                                      / 2))[..., :3])
    decoded = decode_heatmap(rgb, cmap="viridis")
    assert decoded.cmap == "matplotlib:viridis" and pearson(decoded.values, v) >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("photo", ["published/scooter10.jpg", "published/volcano2.jpg"])
def test_photo_is_refused(shared_reference, photo):
    # measured: under grey residual 15.9 / 34.5 (limit 12) and median |t| 0.46 / 0.42 (limit
    # 0.15); the sparse readings (black-firered, jet) are > 90 levels off
    with pytest.raises(DecodeError, match=r"fits no colour map .*distance \d+\.\d of 255"):
        decode_heatmap(shared_reference / photo)


def test_overlay_is_refused(shared_reference):
    folder, relevance, _ = reference(shared_reference, "scooter10")
    v = relevance[CAFFENET_TAGS[1]].sum(axis=0)
    photo = np.asarray(Image.open(folder / "demonstrator_as_inputted_into_the_dnn.png")
                       .convert("RGB")) / 255.0
    scale = render.overlay_scale(v)          # explain's visible overlay (--clip 99.5)
    heat = render.colorize(v, scale, "seismic")
    with pytest.raises(DecodeError, match="photo or an overlay"):
        decode_heatmap(render.to_8bit(render.overlay(photo, heat, v, scale)))


def visible_fraction(photo, over):
    grey = photo @ np.array([0.299, 0.587, 0.114])
    return float((np.abs(over - grey[..., None]).max(axis=-1) * 255 >= 10).mean())


@pytest.mark.parametrize("image", IMAGES)
def test_overlay_is_visible(shared_reference, image):
    folder, relevance, _ = reference(shared_reference, image)
    photo = np.asarray(Image.open(folder / "demonstrator_as_inputted_into_the_dnn.png")
                       .convert("RGB")) / 255.0
    v = relevance["f100_eps0.01_beta1_aux0"].sum(axis=0)
    full = render.heatmap_scale(v, "seismic")[0]
    clipped = render.overlay_scale(v)
    before = visible_fraction(photo, render.overlay(photo, render.colorize(v, full, "seismic"),
                                                    v, full))
    after = visible_fraction(photo, render.overlay(photo, render.colorize(v, clipped, "seismic"),
                                                   v, clipped))
    # pixels >= 10 levels away from the grey photo, measured: 18 % / 13 % before, 40 % / 39 %
    # after; 0.5 % of the pixels saturate by construction
    assert after > 0.3 and after > 2 * before
    assert np.mean(np.abs(v) >= clipped) == pytest.approx(0.005, abs=0.001)


def test_explain_original_geometry(tmp_path, shared_reference):
    image = shared_reference / "images" / "volcano2.jpg"
    assert main(["explain", str(image), "--model", "smallnet", "--out", str(tmp_path),
                 "--original-geometry", "--quiet"]) == 0
    sidecar = json.loads((tmp_path / "volcano2.json").read_text())
    rows, cols = sidecar["preprocessing"]["image_hw"]
    for key in ("heatmap_original", "overlay_original"):
        assert Image.open(tmp_path / sidecar["outputs"][key]).size == (cols, rows)
    # the mapping back: the relevance sampled at the photo's pixels and resampled onto the
    # network input again agrees with the relevance (the input is a centre crop of the resized
    # photo, padded by replicated rows, which the mapping leaves out)
    from caffelrp.geometry import input_offsets, to_original
    info = sidecar["preprocessing"]
    values = np.load(tmp_path / "volcano2_relevance.npy").sum(axis=0)
    back = to_original(values, info)
    off_y, off_x = input_offsets(info["resized_hw"], info["input_hw"], info["base_size"])
    hei, wid = info["resized_hw"]
    in_h, in_w = info["input_hw"]
    resized = np.asarray(Image.fromarray(np.nan_to_num(back).astype(np.float32), "F")
                         .resize((wid, hei), Image.NEAREST), np.float64)
    ys = np.arange(max(0, -off_y), min(in_h, hei - off_y))
    xs = np.arange(max(0, -off_x), min(in_w, wid - off_x))
    crop = resized[(ys + off_y)[:, None], (xs + off_x)[None, :]]
    assert pearson(crop, values[ys[:, None], xs[None, :]]) > 0.8


# ------------------------------------------------------------------------ geometry, metrics
@pytest.mark.slow
def test_align_finds_scale_and_offset():
    v = known_map(40, 40)
    big = np.zeros((80, 90))
    placed = np.asarray(Image.fromarray(v.astype(np.float32), "F").resize((50, 50),
                                                                           Image.BICUBIC))
    big[12:62, 20:70] = placed
    found = align(v, big)
    assert abs(found["scale"] - 1.25) < 0.03
    assert abs(found["offset"][0] - 20) < 1.0 and abs(found["offset"][1] - 12) < 1.0
    assert found["pearson"] > 0.99
    back = sample_window(big, v.shape, found["scale"], found["offset"])
    assert pearson(back, v) > 0.99


def test_own_ssim_matches_scikit_image():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = known_map() / 1.5
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), -1, 1)
    expected = skimage_metrics.structural_similarity(a, b, data_range=2.0)
    assert abs(ssim(a, b) - expected) < 1e-12
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_compare_keys_and_metrics_of_a_map_with_itself():
    v = known_map()
    result = compare(v, v[None].repeat(3, axis=0))
    assert tuple(result) == JSON_KEYS
    assert result["pearson"] == pytest.approx(1.0) and result["ssim"] == pytest.approx(1.0)
    assert result["top_overlap"] == {"1": 1.0, "5": 1.0, "10": 1.0, "20": 1.0}
    assert result["sign_agreement"] == 1.0 and result["cmap"] is None
    flipped = compare(v, -v)
    assert flipped["pearson"] == pytest.approx(-1.0) and flipped["sign_agreement"] == 0.0


@pytest.mark.slow
def test_cli_json_and_figure(tmp_path, shared_reference):
    folder, relevance, _ = reference(shared_reference, "scooter10")
    np.save(tmp_path / "ours.npy", relevance[CAFFENET_TAGS[1]])
    out, fig = tmp_path / "m.json", tmp_path / "f.png"
    args = [str(tmp_path / "ours.npy"),
            str(folder / ("demonstrator_heatmap_%s.png" % CAFFENET_TAGS[1])), "--json", str(out)]
    try:
        import matplotlib  # noqa: F401
        args += ["--figure", str(fig)]
    except ImportError:
        fig = None
    assert main(["compare"] + args) == 0
    data = json.loads(out.read_text())
    assert tuple(data) == JSON_KEYS and data["pearson"] > 0.9999 and data["cmap"] == "original"
    if fig:
        assert Image.open(fig).size[0] > 300


# ------------------------------------------------------------------------------ bad input
def test_bad_input_messages_and_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.npy"
    np.save(good, known_map())
    rank1 = tmp_path / "rank1.npy"
    np.save(rank1, np.zeros(10))
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((10, 40)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cases = [([str(good), str(tmp_path / "missing.png")], 1, "missing.png: no such file"),
             ([str(good), str(broken)], 1, "broken.png"),
             ([str(good), str(rank1)], 1, "rank1.npy: a relevance array is C x H x W or H x W"),
             ([str(good), str(wide)], 1, "--align"),
             ([str(good), str(good), "--cmap", "nosuch"], 2, "unknown colour map 'nosuch'"),
             ([str(good), str(good), "--crop", "5,5,1,1"], 2, "--crop takes")]
    for args, code, text in cases:
        assert main(["compare"] + args) == code, args
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1 and "Traceback" not in err, err


# ------------------------------------------------------------------------------ reproduce
def test_reproduce_refuses_a_base_size_below_the_input(tmp_path, capsys):
    # reproduce opens its model as explain does: a --base-size smaller than the network input is
    # a usage error before anything is read or computed (it used to pass unchecked)
    image = Path(__file__).resolve().parents[1] / "models" / "smallnet" / "example.png"
    assert main(["reproduce", str(tmp_path / "never-read.png"), str(image), "--model", "smallnet",
                 "--base-size", "10", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--base-size 10 is smaller than the network input" in err and "Traceback" not in err


def test_reproduce_ranks_the_rendering_formula_first(tmp_path, shared_reference, monkeypatch):
    _, relevance, _ = reference(shared_reference, "scooter10", "smallnet")
    v = relevance["f2_eps0.01_beta1_aux0"].sum(axis=0)
    scale = render.heatmap_scale(v, "original")[0]
    published = tmp_path / "published.jpg"
    Image.fromarray(render.to_8bit(render.colorize(v, scale, "original"))).save(published,
                                                                                quality=75)
    calls = []
    forward = caffelrp.Net.forward
    monkeypatch.setattr(caffelrp.Net, "forward", lambda self, x: calls.append(len(x)) or
                        forward(self, x))
    out = tmp_path / "r.json"
    assert main(["reproduce", str(published), str(shared_reference / "images" / "scooter10.jpg"),
                 "--model", "smallnet", "--mean",
                 str(shared_reference / "data" / "mean256.binaryproto"), "--base-size", "72",
                 "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["best"] == data["ranking"][0]
    assert data["best"]["rule"] == 2 and data["best"]["beta"] == 1.0
    assert data["best"]["target"] == "top5"
    # measured: best 0.922, the best other formula (100) 0.54
    others = [r for r in data["ranking"] if r["rule"] != 2]
    assert data["best"]["pearson"] > others[0]["pearson"] + 0.2
    assert set(data["best"]) == {"rule", "eps", "beta", "target", "pearson", "spearman", "ssim"}
    # one forward pass for the whole sweep, both targets in it
    assert calls == [2]
    # 10 formulas: 100, 102, 104 read eps and beta (4 each), 0 and the composites eps, 2 beta
    # (2 each), 11, 26, 166 nothing (1 each): 23 passes x 2 targets
    assert len(data["ranking"]) == 46


@pytest.mark.parametrize("rule", sorted(READS, key=str))
def test_a_parameter_the_sweep_runs_once_is_not_read(shared_reference, rule):
    from caffelrp.bundled import bundled_weights
    net = caffelrp.Net(shared_reference / "models" / "smallnet" / "deploy.prototxt",
                       bundled_weights("smallnet"))
    x = np.load(shared_reference / "expected" / "smallnet" / "scooter10" / "input.npy")[None]
    bounds = (x - 100, x + 100)
    reads_eps, reads_beta = READS[rule]
    base = net.relevance(x, rule=rule, eps=1.0, beta=1.0, bounds=bounds, target="top5")
    other_eps = net.relevance(x, rule=rule, eps=0.01, beta=1.0, bounds=bounds, target="top5")
    other_beta = net.relevance(x, rule=rule, eps=1.0, beta=0.0, bounds=bounds, target="top5")
    # a parameter marked unread must not change a single bit; a read one must change something
    assert np.array_equal(base, other_eps) != reads_eps
    assert np.array_equal(base, other_beta) != reads_beta


def test_inputs_rawhm_and_sidecar(tmp_path, shared_reference):
    from caffelrp.compat import rawhm_text
    _, relevance, _ = reference(shared_reference, "scooter10", "smallnet")
    r = relevance["f100_eps1_beta0_aux0"]
    (tmp_path / "x_rawhm.txt").write_text(rawhm_text(r))
    np.save(tmp_path / "x.npy", r)
    # 6 significant digits in the text file: agreement to ~1e-6
    assert compare(tmp_path / "x.npy", tmp_path / "x_rawhm.txt")["pearson"] > 1 - 1e-9
    assert main(["explain", str(shared_reference / "images" / "scooter10.jpg"), "--model",
                 "smallnet", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    ours = np.load(tmp_path / "out" / "scooter10_relevance.npy")
    result = compare(tmp_path / "out" / "scooter10.json", ours)
    assert result["pearson"] == pytest.approx(1.0, abs=1e-12) and result["cmap"] is None
    # the rendered heatmap of the same run, decoded (seismic rendering -> bwr)
    rendered = compare(ours, tmp_path / "out" / "scooter10_heatmap.png")
    assert rendered["cmap"] == "bwr" and rendered["pearson"] > 0.999


def test_png_larger_than_the_limit_is_refused_before_inflating(tmp_path):
    import struct
    import zlib
    from caffelrp.decode import MAX_PIXELS

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    side = int(MAX_PIXELS ** 0.5) + 1
    # a 10 kB file whose header promises side x side pixels of zeros
    body = zlib.compress(b"\0" * (1 << 20), 9)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    with pytest.raises(DecodeError, match="bomb.png: cannot decode the PNG file: .* pixels"):
        decode_heatmap(path)


@pytest.mark.slow
def test_cli_align_finds_a_figure_inside_a_border(tmp_path, shared_reference, capsys):
    _, relevance, _ = reference(shared_reference, "scooter10", "smallnet")
    r = relevance["f100_eps1_beta0_aux0"]
    v = r.sum(axis=0)
    rgb = render.to_8bit(render.colorize(v, render.heatmap_scale(v, "original")[0], "original"))
    enlarged = Image.fromarray(rgb).resize((83, 83), Image.BICUBIC)       # 1.3x
    figure = Image.new("RGB", (120, 100))                                   # black border
    figure.paste(enlarged, (25, 9))
    figure.save(tmp_path / "figure.png")
    np.save(tmp_path / "ours.npy", r)
    args = ["compare", str(tmp_path / "ours.npy"), str(tmp_path / "figure.png")]
    assert main(args) == 1                       # aspect ratios differ: no silent resampling
    assert "--align" in capsys.readouterr().err
    assert main(args + ["--align", "--json", str(tmp_path / "a.json")]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    # 64 px -> 83 px: scale 1.297; the enlargement was placed at (25, 9)
    assert abs(data["alignment"]["scale"] - 83 / 64) < 0.03
    offset = data["alignment"]["offset"]
    assert abs(offset[0] - 25) < 1.5 and abs(offset[1] - 9) < 1.5     # measured 25.0, 9.0
    assert data["pearson"] > 0.95                 # measured 0.993
    # the same by hand: --crop the enlargement out, resampled onto OURS's grid
    assert main(args + ["--crop", "25,9,108,92", "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["pearson"] > 0.95   # measured 0.989


@pytest.mark.slow
def test_reproduce_align_places_a_bordered_figure(tmp_path, shared_reference):
    _, relevance, _ = reference(shared_reference, "scooter10", "smallnet")
    v = relevance["f2_eps0.01_beta1_aux0"].sum(axis=0)
    rgb = render.to_8bit(render.colorize(v, render.heatmap_scale(v, "original")[0], "original"))
    figure = Image.new("RGB", (130, 110))
    figure.paste(Image.fromarray(rgb).resize((90, 90), Image.BICUBIC), (20, 12))
    figure.save(tmp_path / "figure.png")
    out = tmp_path / "r.json"
    assert main(["reproduce", str(tmp_path / "figure.png"),
                 str(shared_reference / "images" / "scooter10.jpg"), "--model", "smallnet",
                 "--mean", str(shared_reference / "data" / "mean256.binaryproto"),
                 "--base-size", "72", "--rules", "0,2,100", "--align", "--json", str(out),
                 "--quiet"]) == 0
    best = json.loads(out.read_text())["best"]
    # measured: placed at scale 1.403 (true 90/64 = 1.406), offset (20.2, 11.9); best 2 / beta 1
    assert best["rule"] == 2 and best["beta"] == 1.0 and best["pearson"] > 0.85
