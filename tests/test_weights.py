"""Reading .caffemodel / .binaryproto files and matching weights to layers (caffe-format.md §2.5-2.6)."""
import numpy as np
import pytest

import caffelrp
from caffelrp.io.caffemodel import (blobproto_bytes, caffemodel_bytes, read_caffemodel,
                                    read_mean_binaryproto, write_caffemodel)
from netutil import layer, prototxt

BODY = (layer("conv", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 }")
        + layer("relu", "ReLU", bottom="conv", top="conv")
        + layer("fc", "InnerProduct", bottom="conv", params="inner_product_param { num_output: 5 }"))
SHAPE = (1, 2, 5, 5)


def random_layers(seed=0):
    rng = np.random.default_rng(seed)
    return [("conv", "Convolution", [rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
                                     rng.standard_normal(4).astype(np.float32)]),
            ("fc", "InnerProduct", [rng.standard_normal((5, 36)).astype(np.float32),
                                    rng.standard_normal(5).astype(np.float32)])]


@pytest.fixture
def proto_path(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(prototxt(BODY, SHAPE))
    return path


@pytest.mark.parametrize("fmt", ["v2", "v1"])
def test_weights_load_from_v2_and_v1_legacy_files(tmp_path, proto_path, fmt):
    layers = random_layers()
    write_caffemodel(tmp_path / "w.caffemodel", layers, fmt=fmt)
    net = caffelrp.Net(proto_path, tmp_path / "w.caffemodel")
    for name, _, arrays in layers:
        for stored, loaded in zip(arrays, net.params[name]):
            np.testing.assert_array_equal(loaded, stored)
    if fmt == "v1":  # legacy dims: the fc weight is stored as 1 x 1 x 5 x 36
        assert read_caffemodel(tmp_path / "w.caffemodel")[1].blobs[0].shape == (1, 1, 5, 36)


def test_loaded_weights_are_aligned_float32_arrays(tmp_path, proto_path):
    write_caffemodel(tmp_path / "w.caffemodel", random_layers())
    net = caffelrp.Net(proto_path, tmp_path / "w.caffemodel")
    for blobs in net.params.values():
        for b in blobs:
            assert b.dtype == np.float32 and b.flags.c_contiguous and b.flags.aligned


def test_unpacked_floats_and_double_data_are_read(tmp_path):
    # BlobProto with shape {dim: 2} and two unpacked float elements (tag 5, wire type 5).
    blob = b"\x3a\x03\x0a\x01\x02" + b"\x2d" + np.float32(1.5).tobytes() + b"\x2d" + \
        np.float32(-2).tobytes()
    layer_msg = b"\x0a\x01a" + b"\x3a" + bytes([len(blob)]) + blob
    (tmp_path / "u.caffemodel").write_bytes(b"\xa2\x06" + bytes([len(layer_msg)]) + layer_msg)
    stored = read_caffemodel(tmp_path / "u.caffemodel")
    np.testing.assert_array_equal(stored[0].blobs[0].data, [1.5, -2])
    # double_data (field 8, packed) replaces data
    doubles = np.array([0.25, 4.0]).tobytes()
    blob = b"\x3a\x03\x0a\x01\x02" + b"\x42" + bytes([len(doubles)]) + doubles
    layer_msg = b"\x0a\x01a" + b"\x3a" + bytes([len(blob)]) + blob
    (tmp_path / "d.caffemodel").write_bytes(b"\xa2\x06" + bytes([len(layer_msg)]) + layer_msg)
    np.testing.assert_array_equal(read_caffemodel(tmp_path / "d.caffemodel")[0].blobs[0].data,
                                  [0.25, 4.0])


@pytest.mark.parametrize("cut", [1, 100, 700, -3])
def test_truncated_caffemodel_is_a_clear_error(tmp_path, proto_path, cut):
    data = caffemodel_bytes(random_layers())
    (tmp_path / "t.caffemodel").write_bytes(data[:cut])
    with pytest.raises(caffelrp.WeightsError, match="t.caffemodel"):
        caffelrp.Net(proto_path, tmp_path / "t.caffemodel")


def test_garbage_file_is_a_clear_error(tmp_path, proto_path):
    (tmp_path / "g.caffemodel").write_bytes(b"this is not a protobuf file at all\n" * 10)
    with pytest.raises(caffelrp.WeightsError, match="g.caffemodel"):
        caffelrp.Net(proto_path, tmp_path / "g.caffemodel")


def test_missing_file_is_a_clear_error(tmp_path, proto_path):
    with pytest.raises(caffelrp.WeightsError, match="cannot open weights file .*nope"):
        caffelrp.Net(proto_path, tmp_path / "nope.caffemodel")


def test_shape_mismatch_names_layer_and_both_shapes(tmp_path, proto_path):
    layers = random_layers()
    layers[1][2][0] = np.zeros((5, 35), np.float32)
    write_caffemodel(tmp_path / "w.caffemodel", layers)
    with pytest.raises(caffelrp.WeightsError, match=r"layer 'fc'.*5 35 \(175\).*5 36 \(180\)"):
        caffelrp.Net(proto_path, tmp_path / "w.caffemodel")


def test_blob_count_mismatch_is_an_error(tmp_path, proto_path):
    layers = random_layers()
    layers[0] = ("conv", "Convolution", layers[0][2][:1])
    write_caffemodel(tmp_path / "w.caffemodel", layers)
    with pytest.raises(caffelrp.WeightsError, match="'conv' has 1 weight blob.*needs 2"):
        caffelrp.Net(proto_path, tmp_path / "w.caffemodel")


def test_missing_layer_weights_are_an_error_unless_allowed(tmp_path, proto_path):
    write_caffemodel(tmp_path / "w.caffemodel", random_layers()[:1])
    with pytest.raises(caffelrp.WeightsError, match="no weights for layer.*fc"):
        caffelrp.Net(proto_path, tmp_path / "w.caffemodel")
    net = caffelrp.Net(proto_path, tmp_path / "w.caffemodel", allow_missing_weights=True)
    assert not net.params["fc"][0].any()


def test_extra_layers_in_the_file_are_ignored_and_reported(tmp_path, proto_path):
    layers = random_layers() + [("loss1/fc", "InnerProduct", [np.ones((2, 2), np.float32)])]
    write_caffemodel(tmp_path / "w.caffemodel", layers)
    net = caffelrp.Net(proto_path, tmp_path / "w.caffemodel")
    assert net.ignored_weight_layers == ["loss1/fc"]


def test_mean_binaryproto_reads_legacy_dims(tmp_path):
    mean = np.random.default_rng(1).random((1, 3, 4, 5)).astype(np.float32)
    (tmp_path / "m.binaryproto").write_bytes(blobproto_bytes(mean, legacy=True))
    np.testing.assert_array_equal(read_mean_binaryproto(tmp_path / "m.binaryproto"), mean[0])


def test_reference_mean_file(shared_reference):
    mean = read_mean_binaryproto(shared_reference / "data" / "mean256.binaryproto")
    assert mean.shape == (3, 256, 256)
    # the generator's formula at (c, h, w) = (2, 0, 0): 112 + 8 + 7 sin(2pi/97) cos(4pi/131)
    expected = 120 + 7 * np.sin(2 * np.pi / 97) * np.cos(2 * np.pi * 2 / 131)
    assert abs(mean[2, 0, 0] - expected) < 1e-4


def test_the_readers_field_numbers_come_from_the_schema_and_are_caffes():
    # caffemodel.py takes its numbers from the generated descriptors (one source of truth);
    # they must be Caffe's own (caffe-format.md Appendix B), and the fields must have the wire
    # encodings the reader decodes
    from caffelrp.io import caffemodel as cm
    from caffelrp.proto import caffe_pb2
    assert (cm.NET_NAME, cm.NET_LAYER, cm.NET_LAYERS) == (1, 100, 2)
    assert (cm.LAYER_NAME, cm.LAYER_TYPE, cm.LAYER_BLOBS) == (1, 2, 7)
    assert (cm.V1_V0LAYER, cm.V1_NAME, cm.V1_TYPE, cm.V1_BLOBS) == (1, 4, 5, 6)
    assert (cm.V0_NAME, cm.V0_TYPE, cm.V0_BLOBS) == (1, 2, 50)
    assert (cm.BLOB_NUM, cm.BLOB_CHANNELS, cm.BLOB_HEIGHT, cm.BLOB_WIDTH) == (1, 2, 3, 4)
    assert (cm.BLOB_DATA, cm.BLOB_SHAPE, cm.BLOB_DOUBLE_DATA, cm.SHAPE_DIM) == (5, 7, 8, 1)
    blob = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    fd = blob["data"]
    assert fd.type == fd.TYPE_FLOAT and blob["double_data"].type == fd.TYPE_DOUBLE
    assert blob["data"].GetOptions().packed and blob["double_data"].GetOptions().packed
    assert caffe_pb2.BlobShape.DESCRIPTOR.fields_by_name["dim"].type == fd.TYPE_INT64
    assert all(blob[f].type == fd.TYPE_INT32 for f in ("num", "channels", "height", "width"))
    assert caffe_pb2.V1LayerParameter.DESCRIPTOR.fields_by_name["type"].enum_type is not None
    assert caffe_pb2.V0LayerParameter.DESCRIPTOR.fields_by_name["type"].type == fd.TYPE_STRING


def test_the_writer_and_protobuf_agree_on_the_numbers():
    # a file written by caffemodel_bytes parses with the generated bindings field by field
    from caffelrp.proto import caffe_pb2
    layers = random_layers()
    for fmt, field in (("v2", "layer"), ("v1", "layers")):
        net = caffe_pb2.NetParameter.FromString(caffemodel_bytes(layers, fmt=fmt, name="n"))
        assert net.name == "n"
        parsed = getattr(net, field)
        assert [lp.name for lp in parsed] == ["conv", "fc"]
        np.testing.assert_array_equal(np.asarray(parsed[1].blobs[0].data, np.float32),
                                      layers[1][2][0].ravel())
