"""What a new user tripped over on the first day (issue 15): resume, shared scale, stems, file
modes, interrupts, method options, the sidecar's contents and the bundled smallnet's note."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffelrp
from caffelrp import cli
from caffelrp.files import file_sha256, write_atomically
from caffelrp.io.caffemodel import write_caffemodel

from netutil import layer, prototxt
from terminal import Terminal
from test_cli_explain import BODY, SIDE, explain, make_image, model  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


def sidecar(folder, stem):
    return json.loads((Path(folder) / (stem + ".json")).read_text())


# ------------------------------------------------------------------------------- files
def test_output_files_honour_the_umask(tmp_path, model):
    old = os.umask(0o022)
    try:
        image = make_image(tmp_path / "a.png")
        assert explain(model, image, "--save-input", out=tmp_path / "o") == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "o").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_a_255_byte_file_name_can_be_written(tmp_path):
    name = "x" * 236 + "_relevance.npy"       # 250 bytes: the old temp name added 20 more
    write_atomically(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_file_hash_notices_a_changed_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"one")
    first = file_sha256(path)
    path.write_bytes(b"two!")      # another size, so the remembered hash cannot be reused
    assert file_sha256(path) != first


# ------------------------------------------------------------------------------- stems
def test_stems_never_collide_and_sidecars_name_their_image(tmp_path, model):
    images = [make_image(tmp_path / n, seed=i) for i, n in enumerate(("a.jpg", "a.png",
                                                                      "a-2.png"))]
    out = tmp_path / "o"
    assert explain(model, *images, out=out) == 0
    by_image = {}
    for path in out.glob("*.json"):
        side = json.loads(path.read_text())
        by_image[Path(side["image"]["path"]).name] = path.stem
    assert sorted(by_image) == ["a-2.png", "a.jpg", "a.png"]
    assert len(set(by_image.values())) == 3
    assert by_image["a-2.png"] == "a-2"
    for name, stem in by_image.items():
        assert sidecar(out, stem)["image"]["sha256"] == file_sha256(tmp_path / name)


def test_output_stems_skip_names_other_images_own():
    assert cli.output_stems(["d/a.jpg", "d/a.png", "d/a-2.png"]) == ["a", "a-3", "a-2"]
    assert cli.output_stems(["x/a.png", "y/a.png", "z/b.png"]) == ["a", "a-2", "b"]


# ------------------------------------------------------------------------------ resume
def test_resume_redoes_images_made_with_other_parameters(tmp_path, model, capsys):
    a = make_image(tmp_path / "a.png", seed=1)
    out = tmp_path / "o"
    assert explain(model, a, "--rule", "100", out=out) == 0
    capsys.readouterr()
    assert explain(model, a, "--resume", "--rule", "epsilon", out=out) == 0
    assert "explained 1 image " in capsys.readouterr().out
    assert sidecar(out, "a")["parameters"]["rule"] == 0
    # and the same settings again: skipped
    assert explain(model, a, "--resume", "--rule", "epsilon", out=out) == 0
    assert "1 already complete (skipped)" in capsys.readouterr().out


def test_resume_redoes_a_different_image_of_the_same_stem(tmp_path, model, capsys):
    first, second = tmp_path / "1", tmp_path / "2"
    first.mkdir(), second.mkdir()
    make_image(first / "a.png", seed=1)
    make_image(second / "a.png", seed=2)
    out = tmp_path / "o"
    assert explain(model, first / "a.png", out=out) == 0
    assert explain(model, second / "a.png", "--resume", out=out) == 0
    assert sidecar(out, "a")["image"]["sha256"] == file_sha256(second / "a.png")


def test_a_folder_holding_another_runs_files_is_reported(tmp_path, model, capsys):
    a = make_image(tmp_path / "a.png", seed=1)
    b = make_image(tmp_path / "b.png", seed=2)
    out = tmp_path / "o"
    assert explain(model, a, out=out) == 0
    capsys.readouterr()
    assert explain(model, b, "--eps", "0.5", out=out) == 2
    err = capsys.readouterr().err
    assert "holds the outputs of another run" in err and "parameters.eps 1.0 here 0.5" in err
    assert not (out / "b.json").exists()
    assert explain(model, b, out=out) == 0        # the same settings: no complaint


def test_shared_scale_with_resume_covers_the_whole_folder(tmp_path, model):
    a = make_image(tmp_path / "a.png", seed=1)
    b = make_image(tmp_path / "b.png", seed=2)
    out = tmp_path / "o"
    assert explain(model, a, "--shared-scale", out=out) == 0
    assert explain(model, a, b, "--shared-scale", "--resume", out=out) == 0
    scales = {s: sidecar(out, s)["heatmap"]["scale"] for s in ("a", "b")}
    own = {s: float(np.abs(np.load(out / (s + "_relevance.npy")).sum(axis=0)).max())
           for s in ("a", "b")}
    assert own["a"] != own["b"]                      # else the test shows nothing
    assert scales["a"] == scales["b"] == pytest.approx(max(own.values()), rel=1e-6)
    # a's PNG was re-rendered with the shared scale: the same bytes as a fresh shared run
    fresh = tmp_path / "fresh"
    assert explain(model, a, b, "--shared-scale", out=fresh) == 0
    for name in ("a_heatmap.png", "a_overlay.png"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()


# ------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_stops_cleanly_with_exit_130(tmp_path, model, monkeypatch, capsys):
    images = [make_image(tmp_path / ("im%d.png" % i), seed=i) for i in range(3)]
    real = cli.write_png
    calls = []

    def interrupted_write(path, rgb):
        calls.append(path)
        if len(calls) == 3:          # during the second image's heatmap
            raise KeyboardInterrupt
        return real(path, rgb)
    monkeypatch.setattr(cli, "write_png", interrupted_write)
    out = tmp_path / "o"
    assert explain(model, *images, "--batch-size", "1", out=out) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "interrupted: 1 done, 2 left (use --resume)"
    assert "Traceback" not in err
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")]       # no temporary file
    assert "im1.json" not in names and "im0.json" in names    # the sidecar comes last
    monkeypatch.setattr(cli, "write_png", real)
    capsys.readouterr()
    assert explain(model, *images, "--resume", out=out) == 0
    assert "explained 2 images" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_in_a_real_process_exits_130_without_traceback(tmp_path):
    import signal
    import time
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        make_image(images / ("im%02d.png" % i), size=(80, 72), seed=i)
    proc = subprocess.Popen([sys.executable, "-m", "caffelrp", "explain", str(images),
                             "--model", "smallnet", "--method", "ig", "--steps", "64",
                             "--batch-size", "1", "--out", str(tmp_path / "o")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "o").glob("*.json")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------ method options
@pytest.mark.parametrize("argv,message", [
    (["--method", "ig", "--rule", "epsilon"], "--rule is an option of --method lrp"),
    (["--method", "lrp", "--steps", "8"], "--steps is an option of --method ig"),
    (["--method", "gradient", "--samples", "3"], "--samples is an option of --method "
                                                  "smoothgrad"),
])
def test_an_option_of_another_method_is_a_usage_error(tmp_path, model, capsys, argv, message):
    a = make_image(tmp_path / "a.png")
    assert explain(model, a, *argv, out=tmp_path / "o") == 2
    assert message in capsys.readouterr().err


def test_shared_gradient_options_are_accepted_where_used(tmp_path, model):
    a = make_image(tmp_path / "a.png")
    assert explain(model, a, "--method", "smoothgrad", "--samples", "2", "--seed", "3",
                   "--score", "probability", out=tmp_path / "o") == 0


# ------------------------------------------------------------------------------- sidecar
@pytest.fixture
def confident_model(tmp_path):
    """The tiny net with large logits: the softmax is one-hot, so five classes tie at 0 and only
    the logits order them."""
    proto = tmp_path / "confident.prototxt"
    proto.write_text(prototxt(BODY, (1, 3, SIDE, SIDE), name="confident"))
    rng = np.random.default_rng(5)
    write_caffemodel(tmp_path / "confident.caffemodel", [
        ("conv1", "Convolution", [rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
                                  rng.normal(0, 0.1, 4).astype(np.float32)]),
        ("fc", "InnerProduct", [rng.normal(0, 5.0, (6, 256)).astype(np.float32),
                                np.zeros(6, np.float32)])])
    return proto, tmp_path / "confident.caffemodel"


def test_sidecar_records_injected_logits_ledger_rule_parameters_and_consistent_top5(
        tmp_path, confident_model):
    a = make_image(tmp_path / "a.png", seed=3)
    out = tmp_path / "o"
    assert explain(confident_model, a, out=out) == 0
    side = sidecar(out, "a")
    probabilities = [p for _, p in side["scores"]["top5"]]
    assert probabilities.count(0.0) >= 3            # ties in the softmax: the case that failed
    assert [c for c, _ in side["scores"]["top5"]] == side["classes"]
    assert side["parameters"]["gamma"] == 0.25 and "zb_bounds" in side["parameters"]
    injected = side["method_info"]["injected"]
    assert injected["blob"] == "fc" and sorted(map(int, injected["logits"])) == sorted(
        side["classes"])
    # the injected values are the logits of the explained classes (float32 forward -> 1e-5)
    import caffelrp
    from caffelrp.preprocess import toolbox_preprocess, mean_pixel, BVLC_MEAN_BGR
    net = caffelrp.Net(*map(str, confident_model))
    x = toolbox_preprocess(str(a), SIDE, SIDE, 18, mean_pixel(BVLC_MEAN_BGR)).blob[None]
    net.forward(x)
    logits = np.array(net.blobs["fc"]).reshape(-1)
    for c, value in injected["logits"].items():
        assert value == pytest.approx(float(logits[int(c)]), rel=1e-5, abs=1e-5)
    assert injected["total"] == pytest.approx(sum(injected["logits"].values()), rel=1e-6)
    ledger = side["method_info"]["ledger"]
    assert [row["layer"] for row in ledger] == ["fc", "pool1", "relu1", "conv1"]
    assert ledger[0]["relevance_in"] == pytest.approx(injected["total"], rel=1e-6)
    assert ledger[-1]["relevance_out"] == pytest.approx(side["relevance_sum"], rel=1e-4,
                                                        abs=1e-4)


def test_bundled_smallnet_says_its_weights_are_random(tmp_path):
    result = subprocess.run([sys.executable, "-m", "caffelrp", "explain",
                             "models/smallnet/example.png", "--model", "smallnet", "--out",
                             str(tmp_path / "h")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "random weights" in result.stderr
    assert "random weights" in sidecar(tmp_path / "h", "example")["model"]["note"]


def test_progress_bar_is_drawn_at_once_with_elapsed_eta_and_failures():
    stream = Terminal()
    progress = cli.Progress(4, stream=stream, interval=0)
    assert "0/4 images" in stream.text and "elapsed" in stream.text     # before any image
    progress.advance()
    progress.advance(failed=True)
    progress.close()
    last = stream.text.strip().split("\r")[-1]
    assert "2/4 images, 1 failed" in last and "ETA" in last and "elapsed" in last


def test_progress_names_the_images_of_a_running_batch():
    # an LRP batch is one call with no per-image end: the bar says which images it holds
    stream = Terminal()
    progress = cli.Progress(10, stream=stream, interval=0)
    progress.working(8)
    assert stream.text.split("\r")[-1].startswith("[") and "working on 1-8" in stream.text
    progress.advance(8)
    progress.working(2)
    last = stream.text.split("\r")[-1]
    assert "8/10 images, working on 9-10" in last, last
    progress.advance()
    assert "9/10 images, working on 10," in stream.text.split("\r")[-1]
    progress.advance()
    progress.close()
    assert "working" not in stream.text.strip().split("\r")[-1]


# ------------------------------------------------------------------------ install and tests
def test_readme_builds_the_kernels_once():
    text = (REPO / "README.md").read_text()
    commands = [line.strip() for line in text.splitlines() if line.startswith("    ")]
    installs = [c for c in commands if "pip install" in c]
    assert len(installs) == 1 and '".[test]"' in installs[0], installs
    assert "python -m pytest -q tests" in commands


def test_reference_weights_are_made_by_the_projects_own_code():
    import hashlib
    import refdata
    manifest = json.loads((REPO / "tests" / "data" / "reference" / "models" / "smallnet" /
                           "manifest.json").read_text())
    made = refdata.net_param_bytes(manifest, 1)
    # the sha256 the public reference publishes for its smallnet seed-1 weights
    assert hashlib.sha256(made).hexdigest() == \
        "30be9663d49b4156f7ac161925c0197d88a1b94b802dae93254ea0ddd33086c9"


def test_no_test_executes_the_reference_scripts():
    script = "caffemodel" + "_gen"     # spelled apart so this file does not match itself
    for path in (REPO / "tests").glob("*.py"):
        assert script not in path.read_text(), path.name


@pytest.mark.slow
def test_a_clone_without_the_shared_reference_runs_the_smallnet_comparison(tmp_path):
    env = dict(os.environ, CAFFELRP_SHARED_REFERENCE=str(tmp_path / "absent"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-rs", "tests/test_lrp_reference.py", "-k", "smallnet"],
                            cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]


def test_ig_progress_moves_after_each_image_inside_a_batch(tmp_path, model, monkeypatch):
    images = [make_image(tmp_path / ("im%d.png" % i), seed=i) for i in range(3)]
    seen = []
    real = cli.Progress.advance

    def advance(self, n=1, failed=False):
        seen.append(n)
        return real(self, n, failed)
    monkeypatch.setattr(cli.Progress, "advance", advance)
    calls = []
    ig = cli.METHODS["ig"]
    monkeypatch.setitem(cli.METHODS, "ig", ig.__class__(
        ig.name, ig.summary, ig.add_options, ig.parameters,
        lambda net, x, *rest: calls.append(len(x)) or ig.run(net, x, *rest)))
    assert explain(model, *images, "--method", "ig", "--steps", "4", "--batch-size", "8",
                   out=tmp_path / "o") == 0
    assert calls == [1, 1, 1] and seen == [1, 1, 1]


# ------------------------------------------------------------- API errors are CaffeLRPErrors
def test_module_level_argument_errors_are_caffelrp_errors():
    # README: every error a user can cause through the API is a CaffeLRPError (ArgumentError is
    # also a ValueError, for callers that caught those before)
    from caffelrp import render
    from caffelrp.attribution.integrated_gradients import make_baseline, quadrature
    from caffelrp.errors import ArgumentError
    from caffelrp.io.caffemodel import caffemodel_bytes
    x = np.zeros((1, 3, 4, 4), np.float32)
    calls = {
        "colour map": lambda: render.colorize(np.zeros((2, 2)), 1.0, "bogus"),
        "relevance shape": lambda: render.pixel_relevance(np.zeros(5)),
        "png shape": lambda: render.png_bytes(np.zeros((2, 2))),
        "quadrature rule": lambda: quadrature("bogus", 5),
        "quadrature steps": lambda: quadrature("riemann-trapezoid", 0),
        "baseline name": lambda: make_baseline(x, "bogus"),
        "baseline shape": lambda: make_baseline(x, np.zeros((2, 5))),
        "caffemodel format": lambda: caffemodel_bytes({}, fmt="v3"),
    }
    from caffelrp.attribution import backward, lrp
    from caffelrp.errors import CaffeLRPError, NoSuchBlobError
    from caffelrp.rules import alpha_beta, gamma
    net = caffelrp.Net(str(REPO / "models" / "smallnet" / "deploy.prototxt"),
                       str(REPO / "models" / "smallnet" / "smallnet.caffemodel"))
    image = np.zeros((1,) + tuple(net.blob_shapes[net.inputs[0]][1:]), np.float32)
    calls.update({
        "lrp start": lambda: lrp.relevance(net, image, start="bogus"),
        "lrp mean shape": lambda: lrp.relevance(net, image, rule="epsilon-gamma-box",
                                                mean=np.zeros(5)),
        "memory budget": lambda: backward.parse_memory("lots"),
        "gradient output": lambda: backward.output_blob(net, "no-such-blob"),
        "alpha-beta beta": lambda: alpha_beta(beta=-1),
        "gamma": lambda: gamma(-1),
    })
    for what, call in calls.items():
        with pytest.raises(ArgumentError) as info:
            call()
        assert str(info.value), what
    # a blob name the net lacks: a CaffeLRPError that is still the KeyError of a dict lookup
    with pytest.raises(NoSuchBlobError) as info:
        backward.backward_by_name(net, {"no-such-blob": np.zeros(1, np.float32)})
    assert isinstance(info.value, (CaffeLRPError, KeyError)) and "no-such-blob" in str(info.value)
