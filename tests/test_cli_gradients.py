"""``python -m caffelrp explain --method gradient|gradxinput|smoothgrad|ig``: the same outputs as
LRP, and the sidecar carries each method's facts (for ig the completeness error)."""
import json

import numpy as np
import pytest

from caffelrp import cli
from test_cli_explain import explain, make_image, model, outputs  # noqa: F401  (fixture)


def sidecar(folder, stem="a"):
    return json.loads((folder / (stem + ".json")).read_text())


@pytest.mark.parametrize("method", ["gradient", "gradxinput", "smoothgrad", "ig"])
def test_gradient_methods_write_the_lrp_outputs(tmp_path, model, method):  # noqa: F811
    image = make_image(tmp_path / "a.png")
    out = tmp_path / "out"
    extra = ["--samples", "4"] if method == "smoothgrad" else []
    assert explain(model, image, "--method", method, "--class", "top1", *extra, out=out) == 0
    assert outputs(out) == ["a.json", "a_heatmap.png", "a_overlay.png", "a_relevance.npy"]
    side = sidecar(out)
    assert side["method"] == method and len(side["classes"]) == 1
    assert side["method_info"]["classes"] == side["classes"]
    values = np.load(out / "a_relevance.npy")
    assert values.dtype == np.float32 and values.shape == (3, 16, 16) and np.abs(values).max() > 0


def test_ig_sidecar_reports_the_completeness_error(tmp_path, model):  # noqa: F811
    image = make_image(tmp_path / "a.png")
    out = tmp_path / "ig"
    assert explain(model, image, "--method", "ig", "--steps", "auto", "--baseline", "black",
                   "--tol", "0.01", "--class", "top1", out=out) == 0
    side = sidecar(out)
    info = side["method_info"]
    assert side["parameters"]["steps"] == "auto" and side["parameters"]["baseline"] == "black"
    assert info["baseline"] == "black" and info["converged"]
    assert info["completeness_error"] <= 0.01
    values = np.load(out / "a_relevance.npy").astype(np.float64)
    # the reported error is that of the written attribution
    assert values.sum() == pytest.approx(info["attribution_sum"], rel=1e-9)
    assert abs(values.sum() - info["delta"]) / abs(info["delta"]) == pytest.approx(
        info["completeness_error"], rel=1e-6, abs=1e-9)


def test_ig_fixed_steps_and_other_baselines(tmp_path, model):  # noqa: F811
    image = make_image(tmp_path / "a.png")
    for baseline in ("mean", "blur", "noise"):
        out = tmp_path / baseline
        assert explain(model, image, "--method", "ig", "--steps", "20", "--baseline", baseline,
                       out=out) == 0
        info = sidecar(out)["method_info"]
        assert info["steps"] == 20 and info["baseline"].startswith(baseline)


def test_ig_bad_steps_is_a_usage_error(tmp_path, model, capsys):  # noqa: F811
    image = make_image(tmp_path / "a.png")
    with pytest.raises(SystemExit) as e:
        explain(model, image, "--method", "ig", "--steps", "0", out=tmp_path / "o")
    assert e.value.code == cli.USAGE_ERROR
    assert "--steps" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["gradient", "gradxinput"])
def test_gradient_methods_reuse_their_forward_for_the_scores(tmp_path, model, method,  # noqa
                                                              monkeypatch):
    """The sidecar's scores come from the gradient's own forward pass of the batch (no second
    forward): the same top-5 as a plain forward, and the net's forward runs once per batch."""
    import caffelrp
    images = [make_image(tmp_path / ("%s.png" % s), seed=k) for k, s in enumerate("abc")]
    calls = []
    real_forward = caffelrp.Net.forward
    monkeypatch.setattr(caffelrp.Net, "forward", lambda self, *a, **k: calls.append(1)
                        or real_forward(self, *a, **k))
    out = tmp_path / "out"
    assert explain(model, *images, "--method", method, "--class", "top1", out=out) == 0
    assert len(calls) == 1                   # one batch of three: the gradient's forward only
    monkeypatch.undo()
    net = caffelrp.Net(*map(str, model))
    x = np.concatenate([caffelrp.load_image(image, net)[0] for image in images])
    scores = net.forward(x)[net.outputs[0]].reshape(3, -1)
    for k, s in enumerate("abc"):
        top5 = sidecar(out, s)["scores"]["top5"]
        # the same float32 forward of the same batch: equal to float32 rounding of the sidecar
        np.testing.assert_allclose([v for _, v in top5], np.sort(scores[k])[::-1][:5],
                                   rtol=1e-6, atol=1e-7)
