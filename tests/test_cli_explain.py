"""``python -m caffelrp explain`` end to end, on a small model and images made here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import caffelrp
from caffelrp import cli, methods
from caffelrp.io.caffemodel import write_caffemodel
from caffelrp.preprocess import mean_pixel, toolbox_preprocess, BVLC_MEAN_BGR

from netutil import layer, prototxt
from terminal import Terminal

REPO = Path(__file__).resolve().parents[1]
SIDE = 16          # net input 16 x 16; default base size round(16 * 256 / 227) = 18
BODY = (layer("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 "
                                             "pad: 1 }")
        + layer("relu1", "ReLU", bottom="conv1", top="conv1")
        + layer("pool1", "Pooling", bottom="conv1",
                params="pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        + layer("fc", "InnerProduct", bottom="pool1", params="inner_product_param { "
                                                             "num_output: 6 }")
        + layer("prob", "Softmax", bottom="fc"))


@pytest.fixture
def model(tmp_path):
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(prototxt(BODY, (1, 3, SIDE, SIDE), name="tiny"))
    rng = np.random.default_rng(0)
    weights = tmp_path / "tiny.caffemodel"
    write_caffemodel(weights, [
        ("conv1", "Convolution", [rng.normal(0, 0.05, (4, 3, 3, 3)).astype(np.float32),
                                  rng.normal(0, 0.1, 4).astype(np.float32)]),
        ("fc", "InnerProduct", [rng.normal(0, 0.05, (6, 256)).astype(np.float32),
                                rng.normal(0, 0.1, 6).astype(np.float32)])])
    return proto, weights


def make_image(path, size=(30, 24), seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "RGB":
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    elif mode == "L":
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(path)
    elif mode == "RGBA":
        Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8)).save(path)
    elif mode == "I;16":
        Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(path)
    return path


def explain(model, *args, out=None):
    proto, weights = model
    argv = ["explain", *map(str, args), "--model", str(proto), "--weights", str(weights),
            "--out", str(out)]
    return cli.main(argv)


def outputs(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# ----------------------------------------------------------------------------- outputs
def test_explain_writes_relevance_heatmap_overlay_and_sidecar(tmp_path, model, capsys):
    image = make_image(tmp_path / "cat.png")
    out = tmp_path / "out"
    assert explain(model, image, "--save-input", out=out) == 0
    assert outputs(out) == ["cat.json", "cat_heatmap.png", "cat_input.npy", "cat_overlay.png",
                            "cat_relevance.npy"]
    relevance = np.load(out / "cat_relevance.npy")
    assert relevance.dtype == np.float32 and relevance.shape == (3, SIDE, SIDE)
    for png in ("cat_heatmap.png", "cat_overlay.png"):
        img = Image.open(out / png)
        assert img.size == (SIDE, SIDE) and img.mode == "RGB"
    # the saved input is the toolbox preprocessing with the BVLC mean pixel
    expected = toolbox_preprocess(image, SIDE, SIDE, 18, mean_pixel(BVLC_MEAN_BGR)).blob
    np.testing.assert_array_equal(np.load(out / "cat_input.npy"), expected)
    # ... and the relevance is Net.relevance of it with the defaults: rule 100, eps 1, beta 1
    net = caffelrp.Net(*model)
    np.testing.assert_allclose(relevance, net.relevance(expected[None], rule=100, eps=1.0,
                                                        beta=1.0)[0], rtol=1e-6, atol=1e-7)
    assert "explained 1 image" in capsys.readouterr().out


def test_sidecar_records_what_reproduces_the_heatmap(tmp_path, model):
    image = make_image(tmp_path / "dog.png")
    out = tmp_path / "out"
    assert explain(model, image, "--rule", "epsilon", "--eps", "0.5", "--class", "2",
                   "--cmap", "original", out=out) == 0
    side = json.loads((out / "dog.json").read_text())
    import hashlib
    assert side["model"]["weights_sha256"] == hashlib.sha256(model[1].read_bytes()).hexdigest()
    assert side["method"] == "lrp"
    assert side["parameters"] == {"rule": 0, "eps": 0.5, "beta": 1.0, "gamma": 0.25,
                                  "switch_layer": 0, "start": "highest-ip",
                                  "zb_bounds": "0 - mean .. 255 - mean per input pixel"}
    assert side["classes"] == [2] and side["target"] == 2
    assert set(side["scores"]["explained"]) == {"2"} and side["scores"]["output"] == "prob"
    assert len(side["scores"]["top5"]) == 5
    assert side["preprocessing"]["base_size"] == 18 and side["preprocessing"]["input_hw"] == [16, 16]
    assert side["heatmap"]["cmap"] == "original"
    assert side["outputs"]["relevance"] == "dog_relevance.npy"
    relevance = np.load(out / "dog_relevance.npy")
    assert abs(side["relevance_sum"] - relevance.sum(dtype=np.float64)) <= 1e-6 * max(
        1.0, abs(side["relevance_sum"]))
    # the heatmap is the sidecar's colour map at its scale
    from caffelrp import render
    values = render.pixel_relevance(relevance)
    expected = render.to_8bit(render.colorize(values, side["heatmap"]["scale"], "original"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "dog_heatmap.png")), expected)


def test_top5_default_explains_five_classes_and_top1_one(tmp_path, model):
    image = make_image(tmp_path / "a.png")
    assert explain(model, image, out=tmp_path / "o5") == 0
    assert explain(model, image, "--class", "top1", out=tmp_path / "o1") == 0
    five = json.loads((tmp_path / "o5" / "a.json").read_text())
    one = json.loads((tmp_path / "o1" / "a.json").read_text())
    assert len(five["classes"]) == 5 and one["classes"] == five["classes"][:1]


def test_folder_and_batches_give_the_same_result_as_single_images(tmp_path, model):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        make_image(folder / ("im%d.png" % i), size=(20 + 3 * i, 18 + i), seed=i)
    (folder / "notes.txt").write_text("not an image, not listed")
    assert explain(model, folder, "--batch-size", "2", out=tmp_path / "batched") == 0
    assert explain(model, folder / "im3.png", out=tmp_path / "single") == 0
    assert len(list((tmp_path / "batched").glob("*.json"))) == 5
    # the same image in a batch of 2 or alone: only float32 summation order differs (the matrix
    # products are blocked differently), measured 1.2e-7 absolute at values ~0.3
    np.testing.assert_allclose(np.load(tmp_path / "batched" / "im3_relevance.npy"),
                               np.load(tmp_path / "single" / "im3_relevance.npy"),
                               rtol=1e-5, atol=1e-6)


def test_shared_scale_is_one_scale_for_the_whole_run(tmp_path, model):
    a = make_image(tmp_path / "a.png", seed=1)
    b = make_image(tmp_path / "b.png", seed=2)
    out = tmp_path / "out"
    assert explain(model, a, b, "--shared-scale", "--batch-size", "1", out=out) == 0
    scales = [json.loads((out / n).read_text())["heatmap"]["scale"] for n in ("a.json", "b.json")]
    own = [float(np.abs(np.load(out / n).sum(axis=0)).max())
           for n in ("a_relevance.npy", "b_relevance.npy")]
    assert scales[0] == scales[1] == pytest.approx(max(own), rel=1e-6)
    assert explain(model, a, out=tmp_path / "own") == 0
    own_scale = json.loads((tmp_path / "own" / "a.json").read_text())["heatmap"]["scale"]
    assert own_scale == pytest.approx(own[0], rel=1e-6)


def test_fixed_scale_overrides(tmp_path, model):
    a = make_image(tmp_path / "a.png")
    assert explain(model, a, "--scale", "123.5", out=tmp_path / "o") == 0
    assert json.loads((tmp_path / "o" / "a.json").read_text())["heatmap"]["scale"] == 123.5


def test_resume_skips_complete_images_and_redoes_incomplete_ones(tmp_path, model, capsys):
    a = make_image(tmp_path / "a.png", seed=1)
    b = make_image(tmp_path / "b.png", seed=2)
    out = tmp_path / "out"
    assert explain(model, a, b, out=out) == 0
    (out / "b_overlay.png").unlink()                 # b is no longer complete
    stamp = (out / "a_heatmap.png").stat().st_mtime_ns
    capsys.readouterr()
    assert explain(model, a, b, "--resume", out=out) == 0
    assert (out / "b_overlay.png").is_file()
    assert (out / "a_heatmap.png").stat().st_mtime_ns == stamp      # not rewritten
    summary = capsys.readouterr().out
    assert "explained 1 image " in summary and "1 already complete (skipped)" in summary


def test_no_temporary_files_are_left_behind(tmp_path, model):
    a = make_image(tmp_path / "a.png")
    out = tmp_path / "out"
    assert explain(model, a, "--save-input", out=out) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_quiet_prints_nothing_on_success(tmp_path, model, capsys):
    a = make_image(tmp_path / "a.png")
    assert explain(model, a, "--quiet", out=tmp_path / "o") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_only_on_a_terminal():
    tty, pipe = Terminal(True), Terminal(False)
    for stream in (tty, pipe):
        progress = cli.Progress(4, stream=stream)
        progress.advance(2)
        progress.close()
    assert "2/4 images" in tty.text and "images/s" in tty.text
    assert pipe.text == ""
    quiet = Terminal(True)
    progress = cli.Progress(4, quiet=True, stream=quiet)
    progress.advance()
    assert quiet.text == ""


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name,make,problem", [
    ("missing.png", lambda p: None, "missing.png: no such file or folder"),
    ("junk.jpg", lambda p: p.write_bytes(b"\xff\xd8 not really"), "junk.jpg: not an image file"),
    ("grey.png", lambda p: make_image(p, mode="L"), "grey.png: grayscale image"),
    ("rgba.png", lambda p: make_image(p, mode="RGBA"), "rgba.png: image with an alpha channel"),
    ("deep.png", lambda p: make_image(p, mode="I;16"), "deep.png: 16-bit or float image"),
    ("tiny.png", lambda p: make_image(p, size=(10, 12)),
     "tiny.png: image is 10x12, smaller than the network input 16x16"),
])
def test_bad_image_is_one_line_and_the_others_are_still_done(tmp_path, model, capsys, name,
                                                             make, problem):
    bad = tmp_path / name
    make(bad)
    good = make_image(tmp_path / "good.png")
    out = tmp_path / "out"
    assert explain(model, bad, good, out=out) == cli.DATA_ERROR
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and problem in err[0]
    assert (out / "good.json").is_file() and not (out / (Path(name).stem + ".json")).exists()


def run(*args, cwd=REPO):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "caffelrp", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env)


def test_class_out_of_range_is_a_usage_error(tmp_path, model):
    a = make_image(tmp_path / "a.png")
    result = run("explain", a, "--model", model[0], "--weights", model[1], "--class", "6",
                 "--out", tmp_path / "o")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--class 6: out of range" in result.stderr and "tiny.prototxt has 6 classes" in \
        result.stderr


def test_weights_that_do_not_match_the_prototxt_are_a_data_error(tmp_path, model):
    proto, _ = model
    wrong = tmp_path / "wrong.caffemodel"
    write_caffemodel(wrong, [("conv1", "Convolution", [np.zeros((4, 3, 5, 5), np.float32),
                                                       np.zeros(4, np.float32)])])
    a = make_image(tmp_path / "a.png")
    result = run("explain", a, "--model", proto, "--weights", wrong, "--out", tmp_path / "o")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "wrong.caffemodel" in result.stderr


@pytest.mark.parametrize("extra,message", [
    (["--weights", "nothere.caffemodel"], "--weights nothere.caffemodel: no such file"),
    (["--rule", "nosuchrule"], "--rule: unknown LRP rule 'nosuchrule'"),
    (["--class", "best"], "--class takes top5, top1"),
    (["--mean", "1,2"], "--mean"),
    (["--cmap", "rainbow"], "--cmap must be one of"),
    (["--base-size", "10"], "--base-size 10 is smaller than the network input 16x16"),
])
def test_bad_arguments_are_usage_errors(tmp_path, model, capsys, extra, message):
    a = make_image(tmp_path / "a.png")
    proto, weights = model
    argv = ["explain", str(a), "--model", str(proto), "--out", str(tmp_path / "o")]
    if "--weights" not in extra:
        argv += ["--weights", str(weights)]
    assert cli.main(argv + extra) == cli.USAGE_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_bundled_zoo_model_without_weights_says_where_to_get_them(tmp_path):
    result = run("explain", "x.png", "--model", "caffenet", "--out", tmp_path / "o")
    assert result.returncode == 2
    assert "bvlc_reference_caffenet.caffemodel is published at" in result.stderr


def test_mean_file_and_pixel_are_used(tmp_path, model):
    from caffelrp.io.caffemodel import blobproto_bytes
    a = make_image(tmp_path / "a.png")
    mean = tmp_path / "m.binaryproto"
    mean.write_bytes(blobproto_bytes(np.full((1, 3, 20, 20), 50, np.float32), legacy=True))
    assert explain(model, a, "--mean", mean, "--save-input", out=tmp_path / "f") == 0
    assert explain(model, a, "--mean", "50,50,50", "--save-input", out=tmp_path / "p") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "f" / "a_input.npy"),
                                  np.load(tmp_path / "p" / "a_input.npy"))
    side = json.loads((tmp_path / "f" / "a.json").read_text())
    assert side["preprocessing"]["mean"]["sha256"]


# ----------------------------------------------------------------------- method table
def test_methods_table_dispatches_a_registered_method(tmp_path, model, monkeypatch):
    def add_options(group):
        group.add_argument("--ones-value", type=float, default=2.0)

    def run_ones(net, x, target, args, context):
        assert context.low.shape == x.shape and np.all(context.high - context.low == 255)
        return methods.Attribution(np.full(x.shape, args.ones_value, np.float32),
                                   [[0]] * len(x), info=[{"note": "test"}] * len(x))
    monkeypatch.setitem(methods.METHODS, "ones", methods.Method(
        "ones", "constant attribution (test)", add_options, lambda a: {"value": a.ones_value},
        run_ones))
    a = make_image(tmp_path / "a.png")
    out = tmp_path / "o"
    assert explain(model, a, "--method", "ones", "--ones-value", "3", out=out) == 0
    np.testing.assert_array_equal(np.load(out / "a_relevance.npy"), 3.0)
    side = json.loads((out / "a.json").read_text())
    assert side["method"] == "ones" and side["parameters"] == {"value": 3.0}
    assert side["method_info"] == {"note": "test"} and "prob" == side["scores"]["output"]


# ------------------------------------------------------------------------------ help / misc
def test_help_lists_subcommands_and_the_original_mode():
    result = run("--help")
    assert result.returncode == 0
    for word in ("explain", "info", "classify", "-c CONFIG", "-f FILELIST", "-p PREPENDPATH"):
        assert word in result.stdout
    explain_help = run("explain", "--help").stdout
    for option in ("--rule", "--class", "--mean", "--method", "--resume", "--save-input",
                   "--shared-scale", "--cmap", "--quiet", "--batch-size"):
        assert option in explain_help


def test_no_command_is_a_usage_error():
    result = run()
    assert result.returncode == 2 and "give a command" in result.stderr


def test_bundled_smallnet_example_from_the_readme(tmp_path):
    result = run("explain", "models/smallnet/example.png", "--model", "smallnet", "--out",
                 tmp_path / "heatmaps")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "heatmaps" / "example_heatmap.png").is_file()


def test_info_prints_indices_shapes_and_parameter_counts(model):
    result = run("info", *model)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:-2]]
    assert rows[0] == ["0", "conv1", "Convolution", "1x4x16x16", str(4 * 27 + 4)]
    assert rows[3] == ["3", "fc", "InnerProduct", "1x6", str(6 * 256 + 6)]
