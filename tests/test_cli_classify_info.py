"""classify and info as a new user runs them (issue 15): bundled names everywhere, explain's
preprocessing by default, folders, mean files, class names, JSON; info reports the weights."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import caffelrp
from caffelrp import cli
from caffelrp.io.caffemodel import blobproto_bytes

REPO = Path(__file__).resolve().parents[1]
SMALLNET = REPO / "models" / "smallnet"


def run(*args):
    return subprocess.run([sys.executable, "-m", "caffelrp", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def images(folder, n=5):
    """Photos-like random images of several aspect ratios (the squash and the toolbox's crop
    differ most on those)."""
    folder.mkdir()
    rng = np.random.default_rng(4)
    sizes = [(96, 72), (72, 120), (150, 80), (80, 80), (200, 90)]
    for i in range(n):
        w, h = sizes[i]
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        img.save(folder / ("im%d.png" % i))
    return folder


def test_classify_agrees_with_explain_on_the_top_class(tmp_path, capsys):
    folder = images(tmp_path / "images")
    assert cli.main(["classify", str(folder), "--model", "smallnet", "--json", "--top", "1"]) == 0
    classified = {Path(e["image"]).stem: e["top"][0]["class"]
                  for e in json.loads(capsys.readouterr().out)}
    assert len(classified) == 5
    assert cli.main(["explain", str(folder), "--model", "smallnet", "--class", "top1",
                     "--out", str(tmp_path / "o"), "--quiet"]) == 0
    for stem, cls in classified.items():
        side = json.loads((tmp_path / "o" / (stem + ".json")).read_text())
        assert side["classes"] == [cls], stem


def test_classify_json_format_and_class_names(tmp_path, capsys):
    assert cli.main(["classify", str(SMALLNET / "example.png"), "--model", "smallnet", "--json",
                     "--top", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result, list) and len(result) == 1
    entry = result[0]
    assert set(entry) == {"image", "top"} and entry["image"].endswith("example.png")
    # a synset file's lines are "ID name": the name is what follows the id
    names = [line.split(" ", 1)[1] for line in (SMALLNET / "synset10.txt").read_text().splitlines()]
    assert [set(t) for t in entry["top"]] == [{"class", "name", "score"}] * 2
    for t in entry["top"]:
        assert t["name"] == names[t["class"]] and 0 <= t["score"] <= 1


def test_classify_takes_a_mean_file_and_the_pycaffe_pipeline_by_option(tmp_path, capsys):
    mean = tmp_path / "mean.binaryproto"
    mean.write_bytes(blobproto_bytes(np.full((1, 3, 80, 80), 100.0, np.float32)))
    argv = ["classify", str(SMALLNET / "example.png"), "--model", "smallnet", "--json"]
    assert cli.main(argv + ["--mean", str(mean)]) == 0
    with_file = json.loads(capsys.readouterr().out)[0]["top"]
    assert cli.main(argv + ["--mean", "100,100,100"]) == 0
    with_pixel = json.loads(capsys.readouterr().out)[0]["top"]
    assert with_file == with_pixel          # a constant mean image is that mean pixel
    assert cli.main(argv + ["--preprocess", "pycaffe"]) == 0
    capsys.readouterr()
    text = run("classify", "--help").stdout
    assert "--preprocess" in text and "explain's preprocessing (default)" in " ".join(
        text.split())


def test_classify_labels_that_are_not_text_are_a_usage_error(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"\xff\xfe\x00binary")
    assert cli.main(["classify", str(SMALLNET / "example.png"), "--model", "smallnet",
                     "--labels", str(labels)]) == 2
    assert "not a text file" in capsys.readouterr().err


def test_classify_without_weights_never_runs_zero_weights(tmp_path, capsys):
    assert cli.main(["classify", str(SMALLNET / "example.png"), "--model",
                     str(SMALLNET / "deploy.prototxt")]) == 2
    assert "--weights is required" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["caffenet", "googlenet", "vgg16", "alexnet", "smallnet"])
def test_info_takes_bundled_names(name):
    result = run("info", name)
    assert result.returncode == 0, result.stderr
    assert "Softmax" in result.stdout and result.stdout.splitlines()[-1].startswith("weights:")


def test_info_says_whether_the_weights_matched_and_what_was_ignored(tmp_path):
    from caffelrp.io.caffemodel import read_caffemodel, write_caffemodel
    stored = read_caffemodel(SMALLNET / "smallnet.caffemodel")
    layers = [(s.name, "Convolution" if len(s.blobs[0].shape) == 4 else "InnerProduct",
               [b.data.reshape(b.shape) for b in s.blobs]) for s in stored]
    layers.append(("extra_layer", "InnerProduct", [np.zeros((2, 2), np.float32)]))
    weights = tmp_path / "extra.caffemodel"
    write_caffemodel(weights, layers)
    result = run("info", "smallnet", weights)
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    assert "matched all 4 layer(s) with parameters" in last
    assert "ignored 1 layer(s) of the file: extra_layer" in last
    assert "weights: none given" in run("info", "caffenet").stdout


def test_load_image_is_explains_input_and_says_its_geometry(tmp_path):
    net = caffelrp.Net(SMALLNET / "deploy.prototxt", SMALLNET / "smallnet.caffemodel")
    x, geometry = caffelrp.load_image(SMALLNET / "example.png", net, mean=(104.0, 117.0, 123.0))
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    assert geometry["image_hw"] == [72, 96] and geometry["resized_hw"] == [54, 72]
    from caffelrp.preprocess import mean_pixel, toolbox_preprocess
    want = toolbox_preprocess(str(SMALLNET / "example.png"), 64, 64, 72,
                              mean_pixel((104.0, 117.0, 123.0))).blob
    np.testing.assert_array_equal(x[0], want)
    with pytest.raises(caffelrp.CaffeLRPError):
        caffelrp.load_image(SMALLNET / "example.png", net, mean=(1.0, 2.0))


def test_transformer_does_what_pycaffes_does():
    net = caffelrp.Net(SMALLNET / "deploy.prototxt", SMALLNET / "smallnet.caffemodel")
    t = caffelrp.Transformer(net, mean=(104.0, 117.0, 123.0))
    image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    x = t.preprocess(image)
    # pycaffe: transpose to CHW, RGB -> BGR, x 255, minus the mean (float32 arithmetic)
    want = image.transpose(2, 0, 1)[::-1] * np.float32(255) - np.array(
        [104, 117, 123], np.float32)[:, None, None]
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-4)   # float32 rounding of 0..255 values
    np.testing.assert_allclose(t.deprocess(x), image, rtol=0, atol=1e-5)
    assert t.preprocess(np.zeros((30, 50, 3))).shape == (3, 64, 64)
