"""The command line on the bundled example model."""
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "caffelrp", *args], capture_output=True,
                          text=True, cwd=cwd or REPO)


def test_classify_bundled_example_prints_ranked_classes():
    result = run("classify", str(REPO / "models/smallnet/example.png"), "--model", "smallnet",
                 "--labels", str(REPO / "models/smallnet/synset10.txt"), "--top", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# top 3 of prob") and lines[1].endswith("example.png")
    assert lines[2].split() == ["rank", "class", "score", "name"] and len(lines) == 6
    scores = [float(line.split()[2]) for line in lines[3:]]
    assert scores == sorted(scores, reverse=True)


def test_classify_reports_unreadable_image_and_continues(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    good = tmp_path / "good.png"
    Image.fromarray(np.full((70, 80, 3), 128, np.uint8)).save(good)
    result = run("classify", str(bad), str(good), "--model", "smallnet")
    assert result.returncode == 1
    assert "broken.jpg: not an image file" in result.stderr
    assert "good.png" in result.stdout


def test_missing_weights_for_a_zoo_model_says_where_to_get_them():
    result = run("classify", "x.png", "--model", "vgg16")
    assert result.returncode == 2
    assert "VGG_ILSVRC_16_layers.caffemodel is published at" in result.stderr


def test_info_lists_layers_with_caffe_indices():
    result = run("info", str(REPO / "models/bvlc_googlenet/deploy.prototxt"))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:-2]]
    assert rows[10][:3] == ["10", "pool2/3x3_s2_pool2/3x3_s2_0_split", "Split"]
    assert rows[-1][:3] == ["150", "prob", "Softmax"]


def test_bad_prototxt_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: \n")
    result = run("info", str(bad))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "bad.prototxt:" in result.stderr
