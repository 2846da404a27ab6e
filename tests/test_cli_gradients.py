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
