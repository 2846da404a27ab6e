"""Region perturbation (AOPC), pixel flipping, pointing game and localisation (issue 11)."""
import json
import sys

import numpy as np
import pytest

import caffelrp
from caffelrp import evaluate as ev
from caffelrp.evaluate_cli import parse_methods
from caffelrp.cli import UsageError, main
from netutil import layer, make_net, randomize

REGION = (slice(9, 18), slice(9, 18))       # the middle 9 x 9 square of a 27 x 27 input


@pytest.fixture
def region_net(tmp_path):
    """Class 0's score is a positive weighting of the middle square only (zero weights
    elsewhere); class 1 is zero."""
    net = make_net(tmp_path, layer("ip", "InnerProduct",
                                   params="inner_product_param { num_output: 2 }"),
                   input_shape=(1, 3, 27, 27))
    w = np.zeros((3, 27, 27), np.float32)
    w[:, REGION[0], REGION[1]] = np.random.default_rng(5).uniform(0.005, 0.02, (3, 9, 9))
    net.params["ip"][0][...] = 0
    net.params["ip"][0][0] = w.ravel()
    net.params["ip"][1][...] = 0
    return net, w


def bright_region_inputs(n=4, seed=3):
    """Inputs with a bright middle square (pixel 255 - mean) on a varied background."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-120, 130, (n, 3, 27, 27)).astype(np.float32)
    x[:, :, REGION[0], REGION[1]] = 130.0
    return x


def test_true_attribution_drops_first_lerf_flat_random_between(region_net):
    net, w = region_net
    x = bright_region_inputs()
    true = x * w                                   # the exact contributions (gradient x input)
    res = ev.region_perturbation(net, x, {"true": true, "random": ev.random_attribution(x.shape),
                                          "anti": -true},
                                 target=0, steps=9, repeats=4, bounds=(-120.0, 135.0))
    t, r, anti = res["true"], res["random"], res["anti"]
    assert t.steps == 9 and t.repeats == 4
    f0 = t.f0[:, None, None]
    # MoRF with the true attribution removes the only relevant square first: the whole drop
    # happens at step 1 and nothing changes after it
    morf = t.curves["morf"]
    assert (morf[:, :, 1] < 0.5 * morf[:, :, 0]).all()
    np.testing.assert_allclose(morf[:, :, 1:], morf[:, :, 1:2].repeat(9, axis=2), rtol=1e-6)
    # LeRF removes the 8 irrelevant squares first: the score stays at f(x) (zero weights there,
    # so float32 rounding is the only difference allowed)
    np.testing.assert_allclose(t.curves["lerf"][:, :, :9], np.broadcast_to(f0, (4, 4, 9)),
                               rtol=1e-6)
    assert t.aopc["morf"].mean() > r.aopc["morf"].mean() > t.aopc["lerf"].mean()
    assert t.abpc.mean() > r.abpc.mean() > anti.abpc.mean()
    # the reversed attribution swaps the two curves (same noise: common random numbers)
    np.testing.assert_allclose(anti.curves["morf"], t.curves["lerf"], rtol=1e-6)


def test_lrp_points_into_the_region_and_localises_it(region_net):
    net, w = region_net
    x = bright_region_inputs(3)
    relevance = net.relevance(x, rule="epsilon", target=0)
    box = [(9, 9, 18, 18)]
    np.testing.assert_array_equal(ev.pointing_game(relevance, [box] * 3), [1.0, 1.0, 1.0])
    mu, mu_w = ev.localisation(relevance, [box] * 3)
    # every positive relevance is inside: mu is 1 up to float rounding of the sums
    np.testing.assert_allclose(mu, 1.0, rtol=1e-12)
    np.testing.assert_allclose(mu_w, 27 * 27 / 81, rtol=1e-12)
    # a box elsewhere holds none of it
    mu, mu_w = ev.localisation(relevance, [[(0, 0, 9, 9)]] * 3)
    np.testing.assert_array_equal(mu, 0.0)


def test_localisation_and_pointing_by_hand():
    r = np.zeros((1, 2, 4, 5))
    r[0, 0, 1, 1], r[0, 1, 1, 1] = 2.0, 1.0        # channel sum 3 at (row 1, col 1)
    r[0, 0, 3, 4] = 1.0
    r[0, 0, 0, 0] = -5.0                            # negative: ignored by mu
    mask = np.zeros((1, 4, 5), bool)
    mask[0, 0:2, 0:2] = True
    mu, mu_w = ev.localisation(r, mask)
    assert mu[0] == pytest.approx(3.0 / 4.0, rel=1e-15)
    assert mu_w[0] == pytest.approx(3.0 / 4.0 * 20 / 4, rel=1e-15)
    assert ev.pointing_game(r, mask)[0] == 1.0
    assert ev.pointing_game(r, [[(3, 2, 5, 4)]])[0] == 0.0
    assert np.isnan(ev.pointing_game(r, np.zeros((1, 4, 5), bool))[0])   # no box: undefined


# ---------------------------------------------------------- against a plain computation
@pytest.fixture
def small_net(tmp_path):
    body = (layer("conv", "Convolution", params="convolution_param { num_output: 4 "
                  "kernel_size: 3 pad: 1 }")
            + layer("relu", "ReLU", bottom="conv", top="conv")
            + layer("pool", "Pooling", bottom="conv", params="pooling_param { pool: MAX "
                    "kernel_size: 2 stride: 2 }")
            + layer("ip", "InnerProduct", bottom="pool", params="inner_product_param { "
                    "num_output: 3 }")
            + layer("prob", "Softmax", bottom="ip"))
    net = make_net(tmp_path, body, input_shape=(1, 3, 14, 18))
    randomize(net, seed=2, scale=0.1)
    return net


def reference_aopc(net, x, attr, classes, region, steps, repeats, seed, low, high):
    """The protocol written out plainly: one perturbed image at a time, regions as slices."""
    n, c, h, w = x.shape
    out = {}
    for order in ("morf", "lerf"):
        aopc = np.zeros(n)
        for i in range(n):
            squares = [(by, bx) for by in range(0, h, region) for bx in range(0, w, region)]
            score = [float(attr[i][:, by:by + region, bx:bx + region].astype(np.float64).sum())
                     for by, bx in squares]
            ranked = sorted(range(len(squares)),
                            key=lambda s: (-score[s] if order == "morf" else score[s], s))
            net.forward(x[i:i + 1])
            f0 = float(net.blobs["ip"][0, classes[i]])
            for rep in range(repeats):
                u = np.random.default_rng([seed, 1, i, rep]).random((c, h, w))
                noise = (low + (high - low) * u).astype(np.float32)
                image = x[i].copy()
                total = 0.0                                  # k = 0 contributes f0 - f0
                for k in range(1, steps + 1):
                    by, bx = squares[ranked[k - 1]]
                    image[:, by:by + region, bx:bx + region] = \
                        noise[:, by:by + region, bx:bx + region]
                    net.forward(image[None])
                    total += f0 - float(net.blobs["ip"][0, classes[i]])
                aopc[i] += total / (steps + 1) / repeats
        out[order] = aopc
    return out


def test_aopc_matches_a_plain_computation(small_net):
    net = small_net
    rng = np.random.default_rng(7)
    x = rng.uniform(-100, 150, (3, 3, 14, 18)).astype(np.float32)
    attr = rng.standard_normal(x.shape).astype(np.float32)
    classes = [2, 0, 1]
    res = ev.region_perturbation(net, x, attr, target=[[c] for c in classes], region=4,
                                 steps=12, repeats=3, seed=11, bounds=(-100.0, 155.0),
                                 batch_size=7)
    ref = reference_aopc(net, x, attr, classes, 4, 12, 3, 11, -100.0, 155.0)
    # the same float32 forward passes at other batch sizes: GEMM rounding only, 1e-6 relative to
    # the scores (AOPC averages differences f(x_0) - f(x_k), so the scores' rounding enters
    # absolutely: 4e-6 seen on a logit of 30 at batch 7 vs 1)
    scale = max(np.abs(res.curves[order]).max() for order in ("morf", "lerf"))
    for order in ("morf", "lerf"):
        np.testing.assert_allclose(res.aopc[order], ref[order], rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(res.abpc, ref["morf"] - ref["lerf"], rtol=1e-6, atol=2e-6 * scale)


def test_pixel_flipping_is_the_protocol_on_pixels(small_net):
    net = small_net
    x = np.random.default_rng(1).uniform(-100, 150, (2, 3, 14, 18)).astype(np.float32)
    attr = np.random.default_rng(2).standard_normal(x.shape)
    pf = ev.pixel_flipping(net, x, attr, steps=5, fraction=0.02, repeats=2, seed=3)
    per_step = int(np.ceil(0.02 * 14 * 18))
    assert pf.per_step == per_step
    # region 1 with per_step pixels a step is the general protocol's definition
    direct = ev.perturbation_curves(net, x, attr, unit=1, steps=5, per_step=per_step,
                                    repeats=2, seed=3)
    np.testing.assert_array_equal(pf.curves["morf"], direct.curves["morf"])


# ------------------------------------------------------------------ invariance and seeds
def test_same_numbers_for_any_batch_size_and_thread_count(small_net):
    net = small_net
    x = np.random.default_rng(4).uniform(-100, 150, (3, 3, 14, 18)).astype(np.float32)
    attrs = {"a": np.random.default_rng(5).standard_normal(x.shape), "b": -x}
    threads = caffelrp.get_num_threads()
    runs = []
    try:
        for batch, t in ((1, 1), (5, 2), (64, 1), (None, 2)):
            caffelrp.set_num_threads(t)
            runs.append(ev.region_perturbation(net, x, attrs, region=5, steps=8, repeats=2,
                                               seed=9, batch_size=batch))
    finally:
        caffelrp.set_num_threads(threads)
    for other in runs[1:]:
        for name in attrs:
            for order in ("morf", "lerf"):
                # the perturbed inputs are identical; the float32 GEMMs may round differently
                # for other batch shapes: a few float32 ulps of the largest logit (measured up
                # to 8 ulps of 4 on a logit that cancels terms of ~50), hence the scale
                ref = runs[0][name].curves[order]
                scale = np.abs(ref).max()
                np.testing.assert_allclose(other[name].curves[order], ref, rtol=1e-6,
                                           atol=1e-6 * scale)


def test_a_different_seed_changes_only_the_noise(region_net, small_net):
    net, w = region_net
    x = bright_region_inputs(2)
    attr = x * w
    a = ev.region_perturbation(net, x, attr, target=0, steps=9, repeats=2, seed=0)
    b = ev.region_perturbation(net, x, attr, target=0, steps=9, repeats=2, seed=1)
    again = ev.region_perturbation(net, x, attr, target=0, steps=9, repeats=2, seed=0)
    np.testing.assert_array_equal(again.curves["morf"], a.curves["morf"])
    np.testing.assert_array_equal(a.f0, b.f0)
    assert not np.allclose(a.curves["morf"][:, :, 1:], b.curves["morf"][:, :, 1:])
    # the ranking is the same: the drop is at step 1 and LeRF stays flat for both seeds
    for res in (a, b):
        np.testing.assert_allclose(res.curves["morf"][:, :, 2:],
                                   res.curves["morf"][:, :, 1:2].repeat(8, axis=2), rtol=1e-6)
        np.testing.assert_allclose(res.curves["lerf"][:, :, :9],
                                   np.broadcast_to(res.f0[:, None, None], (2, 2, 9)), rtol=1e-6)
    # without noise (mean perturbation) the seed changes nothing at all
    m0 = ev.region_perturbation(small_net, np.zeros((1, 3, 14, 18), np.float32) + 20,
                                np.arange(3 * 14 * 18.0).reshape(1, 3, 14, 18),
                                perturbation="mean", steps=6, seed=0)
    m1 = ev.region_perturbation(small_net, np.zeros((1, 3, 14, 18), np.float32) + 20,
                                np.arange(3 * 14 * 18.0).reshape(1, 3, 14, 18),
                                perturbation="mean", steps=6, seed=5)
    np.testing.assert_array_equal(m0.curves["morf"], m1.curves["morf"])
    assert m0.repeats == 1


def test_random_baseline_is_seeded_per_image():
    a = ev.random_attribution((3, 2, 4, 4), seed=1)
    b = ev.random_attribution((1, 2, 4, 4), seed=1, image_ids=[2])
    np.testing.assert_array_equal(a[2], b[0])
    assert not np.array_equal(a, ev.random_attribution((3, 2, 4, 4), seed=2))


def test_bad_arguments_are_clear(small_net):
    x = np.zeros((1, 3, 14, 18), np.float32)
    with pytest.raises(ev.EvaluationError, match="does not fit"):
        ev.region_perturbation(small_net, x, np.zeros((2, 3, 14, 18)))
    with pytest.raises(ev.EvaluationError, match="perturbation must be"):
        ev.region_perturbation(small_net, x, np.zeros((1, 3, 14, 18)), perturbation="zeros")
    with pytest.raises(ev.EvaluationError, match="NaN"):
        ev.region_perturbation(small_net, x, np.full((1, 14, 18), np.nan))


# ---------------------------------------------------------------------------- the CLI
def test_methods_list_parsing():
    specs = parse_methods("composite,epsilon-plus,gradient,ig,random,lrp:0,lrp:2")
    assert [(s.name, s.kind, s.rule) for s in specs] == [
        ("composite", "lrp", 100), ("epsilon-plus", "lrp", "epsilon-plus"),
        ("gradient", "table", None), ("ig", "table", None), ("random", "random", None),
        ("lrp:0", "lrp", 0), ("lrp:2", "lrp", 2)]
    with pytest.raises(UsageError, match="nonsense"):
        parse_methods("composite,nonsense")
    with pytest.raises(UsageError, match="twice"):
        parse_methods("random,random")


def run_cli(tmp_path, *extra):
    from caffelrp.bundled import bundled_prototxt
    image = str(bundled_prototxt("smallnet").parent / "example.png")
    return main(["evaluate", image, "--model", "smallnet", "--methods",
                 "composite,ig,random", "--steps", "4", "--repeats", "2", "--ig-steps", "4",
                 "--out", str(tmp_path / "out"), "--quiet"] + list(extra))


def test_cli_outputs_resume_and_optional_figure(tmp_path, monkeypatch, capsys):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1\nexample.png,10,10,40,50\n")
    assert run_cli(tmp_path, "--metric", "aopc", "pointing", "localisation",
                   "--boxes", str(boxes)) == 0
    out = tmp_path / "out"
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["protocol"]["perturbation"]["region"] == 9
    assert doc["protocol"]["model"]["weights_sha256"]
    ig = doc["methods"]["ig"]
    assert set(ig) >= {"aopc_morf", "aopc_lerf", "abpc", "pointing_game", "mu", "mu_w", "sanity"}
    assert "completeness_error" in ig["sanity"]
    assert "conservation" in doc["methods"]["composite"]["sanity"]
    image = doc["images"][0]
    assert image["methods"]["random"]["abpc"] == pytest.approx(
        image["methods"]["random"]["aopc_morf"] - image["methods"]["random"]["aopc_lerf"])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("image,class,score,method")
    assert (out / "table.md").read_text().count("\n| ") == 4          # header + 3 methods
    before = (out / "per_image" / "example.json").stat().st_mtime_ns
    # resume keeps the record; without matplotlib the figure is skipped with a message
    (out / "curves.png").unlink()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert run_cli(tmp_path, "--resume", "--metric", "aopc", "pointing", "localisation",
                   "--boxes", str(boxes)) == 0
    assert (out / "per_image" / "example.json").stat().st_mtime_ns == before
    err = capsys.readouterr().err
    assert "pip install caffelrp[plot]" in err
    assert not (out / "curves.png").exists() and (out / "evaluation.json").is_file()


def test_cli_lists_images_without_boxes(tmp_path, capsys):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("other.png,1,1,5,5\n")
    from caffelrp.bundled import bundled_prototxt
    img = str(bundled_prototxt("smallnet").parent / "example.png")
    assert main(["evaluate", img, "--model", "smallnet", "--methods", "random",
                 "--metric", "pointing", "--boxes", str(boxes), "--out",
                 str(tmp_path / "out")]) == 0
    assert "without a usable box" in capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert doc["skipped_for_boxes"][0]["reason"] == "no box for this image"
    assert doc["methods"]["random"]["pointing_game"] is None


def test_cli_usage_errors(tmp_path, capsys):
    assert run_cli(tmp_path, "--metric", "pointing") == 2
    assert "--boxes" in capsys.readouterr().err
    assert run_cli(tmp_path, "--class", "top5") == 2
    assert run_cli(tmp_path, "--memory-budget", "lots") == 2
    assert "--memory-budget" in capsys.readouterr().err


def test_progress_line_only_on_a_terminal():
    from caffelrp.evaluate_cli import EvalProgress
    from terminal import Terminal
    tty = Terminal()
    progress = EvalProgress(2, stream=tty)
    progress.show("aopc", 64, 400)
    progress.advance(1)
    progress.close()
    assert "0/2 images" in tty.getvalue() and "aopc 64/400" in tty.getvalue()
    assert "1/2 images" in tty.getvalue()
    piped = Terminal(False)
    quiet = EvalProgress(2, stream=piped)
    quiet.show("aopc", 1, 2)
    assert piped.getvalue() == ""
