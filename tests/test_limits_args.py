"""Argument limits (issue 16): out-of-range or NaN options are usage errors (exit 2) that name the
option, before any image is read; the library calls refuse the same values with a CaffeLRPError."""
from pathlib import Path

import numpy as np
import pytest

import caffelrp
from caffelrp import cli
from caffelrp.errors import CaffeLRPError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = str(REPO / "models" / "smallnet" / "example.png")


@pytest.mark.parametrize("options,flag", [
    (["--base-size", "0"], "--base-size"),
    (["--base-size", "100000"], "--base-size"),
    (["--eps", "nan"], "--eps"),
    (["--beta", "-1"], "--beta"),
    (["--beta", "nan"], "--beta"),
    (["--scale", "0"], "--scale"),
    (["--scale", "nan"], "--scale"),
    (["--overlay-alpha", "5"], "--overlay-alpha"),
    (["--method", "smoothgrad", "--samples", "0"], "--samples"),
    (["--method", "ig", "--steps", "100000000"], "--steps"),
    (["--method", "ig", "--tol", "-1"], "--tol"),
    (["--method", "ig", "--max-steps", "0"], "--max-steps"),
])
def test_bad_explain_option_is_a_usage_error_naming_it(tmp_path, capsys, options, flag):
    out = tmp_path / "out"
    code = cli.main(["explain", EXAMPLE, "--model", "smallnet", "--out", str(out), "--quiet",
                     *options])
    err = capsys.readouterr().err
    assert code == cli.USAGE_ERROR, err
    assert flag in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())      # nothing written for any image


@pytest.fixture(scope="module")
def smallnet():
    from caffelrp.bundled import bundled_prototxt, bundled_weights
    return caffelrp.Net(str(bundled_prototxt("smallnet")), str(bundled_weights("smallnet")))


def test_library_calls_refuse_the_same_values(smallnet):
    _, c, h, w = smallnet.blob_shapes[smallnet.inputs[0]]
    x = np.zeros((1, c, h, w), np.float32)
    with pytest.raises(CaffeLRPError):
        smallnet.relevance(x, rule=100, beta=float("nan"))
    with pytest.raises(CaffeLRPError):
        smallnet.integrated_gradients(x, steps=10 ** 9, baseline="mean")
    with pytest.raises(CaffeLRPError):
        smallnet.smoothgrad(x, samples=10, input_range=(5,))
