"""The committed protobuf bindings are generated from proto/caffe.proto, and that schema puts
Caffe's fields at Caffe's numbers with Caffe's wire encoding (caffe-format.md §1, Appendix B).

The wire tests decode bytes built by hand, so they do not depend on protobuf agreeing with itself.
"""
import importlib.util
import struct
from pathlib import Path

from caffelrp.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]


# --- hand-made protobuf encoding -------------------------------------------------------------

def varint(n):
    n &= (1 << 64) - 1  # negative int32/int64 are sent as 10-byte two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field_number, wire_type):
    return varint(field_number << 3 | wire_type)


def varint_field(field_number, value):
    return key(field_number, 0) + varint(value)


def bytes_field(field_number, payload):
    return key(field_number, 2) + varint(len(payload)) + payload


def float_field(field_number, value):
    return key(field_number, 5) + struct.pack("<f", value)


def packed_floats(field_number, values):
    return bytes_field(field_number, struct.pack(f"<{len(values)}f", *values))


# --- bindings in sync with the schema ----------------------------------------------------------

def load_generator():
    spec = importlib.util.spec_from_file_location("caffelrp_proto_generate",
                                                  REPO / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_bindings_are_exactly_what_protoc_generates(tmp_path):
    generated = load_generator().generate_bindings(tmp_path)
    committed = REPO / "caffelrp" / "proto" / "caffe_pb2.py"
    assert generated.read_bytes() == committed.read_bytes(), (
        "caffelrp/proto/caffe_pb2.py is stale: run `python proto/generate.py`")


def test_only_blob_shape_and_blob_values_are_packed():
    packed = set()
    for message in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
        for field in message.fields:
            if field.GetOptions().packed:
                packed.add(f"{message.name}.{field.name}")
    assert packed == {"BlobShape.dim", "BlobProto.data", "BlobProto.diff",
                      "BlobProto.double_data", "BlobProto.double_diff"}


def test_pooling_has_no_post_1_0_round_mode():
    assert "round_mode" not in caffe_pb2.PoolingParameter.DESCRIPTOR.fields_by_name


# --- BlobProto ---------------------------------------------------------------------------------

def test_blob_data_is_field_5_as_one_packed_float_run():
    blob = caffe_pb2.BlobProto.FromString(packed_floats(5, [1.5, -2.0, 3.25]))
    assert list(blob.data) == [1.5, -2.0, 3.25]


def test_blob_data_is_written_packed():
    blob = caffe_pb2.BlobProto(data=[1.0, 2.0])
    assert blob.SerializeToString() == packed_floats(5, [1.0, 2.0])


def test_blob_data_also_reads_unpacked():
    blob = caffe_pb2.BlobProto.FromString(float_field(5, 1.0) + float_field(5, 2.0))
    assert list(blob.data) == [1.0, 2.0]


def test_blob_legacy_dims_are_fields_1_to_4_and_keep_presence():
    wire = varint_field(1, 1) + varint_field(2, 3) + varint_field(3, 5) + varint_field(4, 7)
    blob = caffe_pb2.BlobProto.FromString(wire)
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 7)
    assert caffe_pb2.BlobProto.FromString(varint_field(2, 0)).HasField("channels")
    assert not caffe_pb2.BlobProto.FromString(b"").HasField("num")


def test_blob_shape_is_field_7_with_packed_int64_dims():
    shape = bytes_field(1, varint(4096) + varint(9216))
    blob = caffe_pb2.BlobProto.FromString(bytes_field(7, shape))
    assert list(blob.shape.dim) == [4096, 9216]


def test_blob_double_data_is_field_8():
    blob = caffe_pb2.BlobProto.FromString(bytes_field(8, struct.pack("<2d", 0.5, 2.5)))
    assert list(blob.double_data) == [0.5, 2.5]


# --- layers -------------------------------------------------------------------------------------

def test_layer_name_type_and_blobs_are_fields_1_2_7():
    wire = (bytes_field(1, b"conv1") + bytes_field(2, b"Convolution")
            + bytes_field(7, packed_floats(5, [0.25])))
    layer = caffe_pb2.LayerParameter.FromString(wire)
    assert (layer.name, layer.type, list(layer.blobs[0].data)) == ("conv1", "Convolution", [0.25])


def test_convolution_param_is_layer_field_106():
    wire = bytes_field(106, varint_field(1, 96))
    assert caffe_pb2.LayerParameter.FromString(wire).convolution_param.num_output == 96


def test_convolution_pad_is_an_unpacked_repeated_field_3():
    wire = varint_field(3, 1) + varint_field(3, 2) + varint_field(4, 3) + varint_field(6, 2)
    conv = caffe_pb2.ConvolutionParameter.FromString(wire)
    assert (list(conv.pad), list(conv.kernel_size), list(conv.stride)) == ([1, 2], [3], [2])
    assert conv.SerializeToString() == wire  # written unpacked too, as Caffe writes it


def test_pooling_param_is_layer_field_121():
    wire = bytes_field(121, varint_field(1, 1) + varint_field(2, 3))
    pooling = caffe_pb2.LayerParameter.FromString(wire).pooling_param
    assert (pooling.pool, pooling.kernel_size) == (caffe_pb2.PoolingParameter.AVE, 3)


def test_inner_product_param_is_layer_field_117():
    wire = bytes_field(117, varint_field(1, 4096))
    assert caffe_pb2.LayerParameter.FromString(wire).inner_product_param.num_output == 4096


def test_v1_layer_name_type_and_blobs_are_fields_4_5_6():
    wire = (bytes_field(4, b"fc6") + varint_field(5, 14)
            + bytes_field(6, varint_field(1, 1) + packed_floats(5, [1.0])))
    layer = caffe_pb2.V1LayerParameter.FromString(wire)
    assert layer.name == "fc6"
    assert layer.type == caffe_pb2.V1LayerParameter.INNER_PRODUCT
    assert layer.blobs[0].num == 1 and list(layer.blobs[0].data) == [1.0]


def test_v1_convolution_param_is_field_10():
    wire = bytes_field(10, varint_field(1, 64))
    assert caffe_pb2.V1LayerParameter.FromString(wire).convolution_param.num_output == 64


def test_v1_blobs_lr_is_unpacked_field_7():
    wire = float_field(7, 1.0) + float_field(7, 2.0)
    assert list(caffe_pb2.V1LayerParameter.FromString(wire).blobs_lr) == [1.0, 2.0]


def test_v0_layer_is_v1_field_1_with_name_type_blobs_1_2_50():
    v0 = (bytes_field(1, b"conv1") + bytes_field(2, b"conv")
          + bytes_field(50, packed_floats(5, [7.0])))
    layer = caffe_pb2.V1LayerParameter.FromString(bytes_field(1, v0))
    assert (layer.layer.name, layer.layer.type) == ("conv1", "conv")
    assert list(layer.layer.blobs[0].data) == [7.0]


# --- NetParameter ---------------------------------------------------------------------------------

def test_net_layer_is_field_100():
    net = caffe_pb2.NetParameter.FromString(bytes_field(100, bytes_field(1, b"conv1")))
    assert [layer.name for layer in net.layer] == ["conv1"]


def test_net_layers_is_field_2():
    net = caffe_pb2.NetParameter.FromString(bytes_field(2, bytes_field(4, b"conv1")))
    assert [layer.name for layer in net.layers] == ["conv1"]


def test_net_inputs_are_fields_3_4_8():
    wire = (bytes_field(3, b"data")
            + varint_field(4, 10) + varint_field(4, 3) + varint_field(4, 227) + varint_field(4, 227)
            + bytes_field(8, bytes_field(1, varint(1) + varint(3))))
    net = caffe_pb2.NetParameter.FromString(wire)
    assert list(net.input) == ["data"]
    assert list(net.input_dim) == [10, 3, 227, 227]
    assert [list(shape.dim) for shape in net.input_shape] == [[1, 3]]


def test_negative_blob_shape_dim_round_trips():
    shape = caffe_pb2.BlobShape.FromString(bytes_field(1, varint(-1)))
    assert list(shape.dim) == [-1]
