"""Errors a user can cause are CaffeLRPErrors with a message, and the command line exits 1 for
data errors and 2 for usage errors (issue 16). One test per defect found there or by the fuzzer.

Tested elsewhere (already right before these): Log base 1 (test_limits_build), bounds=(1,) and
input_range=(5,) (test_limits_args), --beta -1 / --samples 0 / --tol -1 / --max-steps 0 exit 2
(test_limits_args), alpha-beta on an InnerProduct reading a signed 4-D blob and a Softmax that is
not the top of the injection layer (test_lrp_resnet), binary --labels (test_cli_classify_info).
"""
import json
from pathlib import Path

import numpy as np
import pytest

import caffelrp
from caffelrp import cli, threads
from caffelrp.errors import ArgumentError, NonFiniteError, WeightsError
from caffelrp.files import json_bytes
from caffelrp.io.caffemodel import (blobproto_bytes, caffemodel_bytes, read_caffemodel,
                                    non_finite_count, read_mean_binaryproto, write_caffemodel)
from netutil import layer, prototxt

REPO = Path(__file__).resolve().parents[1]
SMALLNET = REPO / "models" / "smallnet"
EXAMPLE = str(SMALLNET / "example.png")
IP = layer("ip", "InnerProduct", params="inner_product_param { num_output: 3 }")


def ip_net(tmp_path, body=IP, shape=(1, 3, 2, 2)):
    path = tmp_path / "ip.prototxt"
    path.write_text(prototxt(body, shape))
    return path


def explain(tmp_path, capsys, *options, out="out"):
    code = cli.main(["explain", EXAMPLE, "--model", "smallnet", "--out", str(tmp_path / out),
                     "--quiet", *options])
    return code, capsys.readouterr().err


# -- non-finite weights ---------------------------------------------------------------------
@pytest.mark.parametrize("blob,value", [(0, np.nan), (1, np.inf), (1, -np.inf)])
def test_non_finite_weights_are_refused_naming_the_layer(tmp_path, blob, value):
    arrays = [np.ones((3, 12), np.float32), np.zeros(3, np.float32)]
    arrays[blob].flat[1] = value
    weights = tmp_path / "w.caffemodel"
    write_caffemodel(weights, [("ip", "InnerProduct", arrays)])
    with pytest.raises(WeightsError, match=r"weight blob %d of layer 'ip' \(InnerProduct\) holds "
                                           r"1 non-finite" % blob):
        caffelrp.Net(ip_net(tmp_path), weights)


def test_non_finite_values_are_counted_across_chunks():
    values = np.zeros(2_500_001, np.float32)           # more than two chunks of 2^20
    assert non_finite_count(values) == 0
    values[[0, 1_048_576, 2_500_000]] = [np.nan, np.inf, -np.inf]
    assert non_finite_count(values) == 3
    assert non_finite_count(values, chunk=7) == 3


def test_a_layer_of_the_file_that_the_prototxt_lacks_is_ignored_nan_or_not(tmp_path):
    good = [np.ones((3, 12), np.float32), np.zeros(3, np.float32)]
    weights = tmp_path / "w.caffemodel"
    write_caffemodel(weights, [("ip", "InnerProduct", good),
                               ("extra", "InnerProduct", [np.full((2, 2), np.nan, np.float32)])])
    net = caffelrp.Net(ip_net(tmp_path), weights)      # as Caffe: extra layers are not read
    assert net.ignored_weight_layers == ["extra"]


# -- mean files: every way of being bad is one usage error ----------------------------------
def _mean_files():
    legacy = blobproto_bytes(np.full((1, 3, 80, 80), 110, np.float32), legacy=True)
    nan = np.full((1, 3, 80, 80), 110, np.float32)
    nan[0, 1, 5, 5] = np.nan
    return {
        "truncated.binaryproto": legacy[:len(legacy) // 2],
        "empty.binaryproto": b"",
        "not-protobuf.binaryproto": b"\x0b\xff\xff",
        "zero-size.binaryproto": blobproto_bytes(np.zeros((1, 3, 0, 0), np.float32), legacy=True),
        "nan.binaryproto": blobproto_bytes(nan, legacy=True),
        "text-nan.txt": ("3 1 1\n1 nan 3\n").encode(),
        "text-zero-size.txt": b"3 0 0\n",
        "text-negative-size.txt": b"3 -2 -2\n" + b"1 " * 12,
        "text-beyond-float32.txt": b"3 1 1\n1 1e300 3\n",
    }


@pytest.mark.parametrize("name", sorted(_mean_files()))
def test_a_bad_mean_file_is_one_usage_error(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(_mean_files()[name])
    code, err = explain(tmp_path, capsys, "--mean", str(path))
    assert code == cli.USAGE_ERROR, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --mean") and name in lines[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_mean_pixel_with_nan_is_a_usage_error(tmp_path, capsys):
    code, err = explain(tmp_path, capsys, "--mean", "104,nan,123")
    assert code == cli.USAGE_ERROR and "--mean takes three finite numbers" in err


def test_a_mean_of_shape_1x3x0x0_is_a_weights_error(tmp_path):
    path = tmp_path / "m.binaryproto"
    path.write_bytes(blobproto_bytes(np.zeros((1, 3, 0, 0), np.float32), legacy=True))
    with pytest.raises(WeightsError, match=r"one C x H x W image, found shape 1 3 0 0"):
        read_mean_binaryproto(path)


def test_an_empty_mean_image_from_python_is_an_argument_error():
    net = caffelrp.Net(SMALLNET / "deploy.prototxt", SMALLNET / "smallnet.caffemodel")
    with pytest.raises(caffelrp.CaffeLRPError, match="mean"):
        caffelrp.load_image(EXAMPLE, net, mean=np.zeros((3, 0, 0)))


# -- the weights file reader ----------------------------------------------------------------
def _layer_with_shape(shape_payload):
    from caffelrp.io.caffemodel import _bytes_field
    blob = _bytes_field(7, _bytes_field(1, shape_payload))
    return _bytes_field(100, _bytes_field(1, b"ip") + _bytes_field(2, b"InnerProduct")
                        + _bytes_field(7, blob))


def test_a_shape_dim_varint_of_more_than_64_bits_is_a_weights_error(tmp_path):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_layer_with_shape(b"\xff" * 9 + b"\x7f"))   # 10 bytes: a 70-bit value
    with pytest.raises(WeightsError, match="malformed varint"):
        read_caffemodel(path)


def test_dims_whose_product_exceeds_64_bits_are_a_weights_error(tmp_path):
    from caffelrp.io.caffemodel import _varint
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_layer_with_shape(_varint(2 ** 40) * 2))    # 2^80 elements declared
    with pytest.raises(WeightsError, match="declares shape .* but holds 0 values"):
        read_caffemodel(path)


# -- strict JSON ----------------------------------------------------------------------------
def test_json_bytes_writes_numpy_values_as_plain_json():
    text = json_bytes({"a": np.float32(2.5), "b": np.arange(3), "c": [np.int64(4)]})
    assert json.loads(text) == {"a": 2.5, "b": [0, 1, 2], "c": [4]}
    assert text.endswith(b"\n")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), np.float32("-inf")])
def test_json_bytes_refuses_non_finite_numbers_naming_where(value):
    with pytest.raises(NonFiniteError, match=r"x\.json: scores\.top5\[1\] is"):
        json_bytes({"scores": {"top5": [1.0, value]}}, "x.json")


def _overflowing_smallnet(tmp_path):
    """smallnet with weights scaled so that its float32 activations overflow to inf - inf."""
    stored = read_caffemodel(SMALLNET / "smallnet.caffemodel")
    layers = [(s.name, s.type, [b.data.reshape(b.shape) * np.float32(1e30) for b in s.blobs])
              for s in stored if s.blobs]
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(caffemodel_bytes(layers))
    return path


def test_a_result_with_nan_is_an_error_never_a_nan_token_in_the_sidecar(tmp_path, capsys):
    weights = _overflowing_smallnet(tmp_path)
    code, err = explain(tmp_path, capsys, "--weights", str(weights), "--no-weights-check")
    assert code == cli.DATA_ERROR, err
    assert "Traceback" not in err and "is nan; JSON has no NaN or infinity" in err
    for sidecar in (tmp_path / "out").glob("*.json"):      # whatever was written parses strictly
        json.loads(sidecar.read_text(), parse_constant=lambda c: pytest.fail("token %s" % c))
    assert not list((tmp_path / "out").glob("*.json"))


def test_classify_json_never_prints_nan(tmp_path, capsys):
    weights = _overflowing_smallnet(tmp_path)
    code = cli.main(["classify", EXAMPLE, "--model", "smallnet", "--weights", str(weights),
                     "--no-weights-check", "--json"])
    out, err = capsys.readouterr()
    assert code == cli.DATA_ERROR and "NaN" not in out and "JSON has no NaN" in err, err


# -- Input layers without a shape -----------------------------------------------------------
def _unshaped(tmp_path):
    path = tmp_path / "unshaped.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" }\n'
                    + layer("relu", "ReLU"))
    return path


def test_info_on_an_input_layer_without_a_shape(tmp_path, capsys):
    assert cli.main(["info", str(_unshaped(tmp_path))]) == 0
    assert "input shapes not declared" in capsys.readouterr().out


def test_explain_on_an_input_layer_without_a_shape_is_a_usage_error(tmp_path, capsys):
    code = cli.main(["explain", EXAMPLE, "--model", str(_unshaped(tmp_path)), "--out",
                     str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.USAGE_ERROR and "declared shape" in err and "data (no shape)" in err, err


# -- Net.backward ---------------------------------------------------------------------------
def test_backward_before_forward_is_an_argument_error(tmp_path):
    net = caffelrp.Net(ip_net(tmp_path), allow_missing_weights=True)
    with pytest.raises(ArgumentError, match="call net.forward"):
        net.backward({"ip": np.ones((1, 3), np.float32)})


def test_backward_takes_a_dict_of_gradients(tmp_path):
    net = caffelrp.Net(ip_net(tmp_path), allow_missing_weights=True)
    net.forward(np.ones((1, 3, 2, 2), np.float32))
    with pytest.raises(ArgumentError, match="takes {blob name: gradient}"):
        net.backward([np.ones((1, 3), np.float32)])
    with pytest.raises(ArgumentError, match="no blob named 'nothing'"):
        net.backward({"nothing": np.ones((1, 3), np.float32)})


# -- LRP of an InnerProduct with a folded Bias (found by the prototxt fuzzer) ----------------
def test_an_inner_product_with_an_in_place_bias_explains_as_its_folded_twin(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 12)).astype(np.float32)
    b, extra = (rng.standard_normal(3).astype(np.float32) for _ in range(2))
    with_bias = caffelrp.Net(ip_net(tmp_path, IP + layer("bias", "Bias", bottom="ip", top="ip")),
                             allow_missing_weights=True)
    with_bias.params["ip"][0][...], with_bias.params["ip"][1][...] = w, b
    with_bias.params["bias"][0][...] = extra
    (tmp_path / "twin").mkdir()
    twin = caffelrp.Net(ip_net(tmp_path / "twin"), allow_missing_weights=True)
    twin.params["ip"][0][...], twin.params["ip"][1][...] = w, b + extra
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    for rule in (0, 2):   # once an AttributeError (no z for a folded chain)
        # injected at the Bias's output: the twin's logits
        got = with_bias.relevance(x, rule=rule, target="top1", start="bias")
        want = twin.relevance(x, rule=rule, target="top1", start="ip")
        # the same float32 weights, the bias added once in float32 on either side
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- command-line usage errors --------------------------------------------------------------
def test_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, err = explain(tmp_path, capsys, out="afile")
    assert code == cli.USAGE_ERROR and "is a file, not a folder" in err and "Traceback" not in err


def test_classify_output_that_is_no_blob_is_a_usage_error(capsys):
    assert cli.main(["classify", EXAMPLE, "--model", "smallnet", "--output", "bogus"]) == 2
    assert "--output bogus: the network has no blob of that name" in capsys.readouterr().err


def test_classify_labels_that_do_not_exist_are_a_usage_error(tmp_path, capsys):
    assert cli.main(["classify", EXAMPLE, "--model", "smallnet", "--labels",
                     str(tmp_path / "missing.txt")]) == 2
    assert "--labels" in capsys.readouterr().err


# -- thread counts --------------------------------------------------------------------------
@pytest.mark.parametrize("count", ["0", "-2"])
def test_threads_zero_or_negative_is_a_usage_error(tmp_path, capsys, count):
    code, err = explain(tmp_path, capsys, "--threads", count)
    assert code == cli.USAGE_ERROR and "--threads %s" % count in err, err


@pytest.mark.parametrize("value", ["abc", "0", "2.5"])
def test_a_bad_caffelrp_num_threads_is_one_usage_error(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("CAFFELRP_NUM_THREADS", value)
    monkeypatch.setattr(threads, "_num_threads", None)    # read again, as in a new process
    code, err = explain(tmp_path, capsys)
    assert code == cli.USAGE_ERROR, err
    assert err.strip().splitlines() == [
        "error: CAFFELRP_NUM_THREADS must be a positive integer (a thread count), got %r"
        % value]
