"""Reading net definitions: the text format real prototxt files use (caffe-format.md §1.2), the
error messages, and the upgrade of V0/V1 nets to the current format (§2.1-2.3)."""
import json
import math
import warnings

import pytest

from caffelrp.errors import PrototxtError
from caffelrp.io.prototxt import (NetUpgradeWarning, parse_net_text, read_net_prototxt,
                                  upgrade_net, v1_type_name, v1_type_number)
from caffelrp.proto import caffe_pb2


def parse(text):
    return parse_net_text(text, "test.prototxt")


def upgrade(text):
    return upgrade_net(parse(text), "test.prototxt")


def upgrade_quietly(text):
    """Upgrade and return (net, messages of the NetUpgradeWarnings raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = upgrade(text)
    return net, [str(w.message) for w in caught if issubclass(w.category, NetUpgradeWarning)]


def params(layer):
    return [(p.lr_mult, p.decay_mult) for p in layer.param]


# =============================================================================================
# Text format features (§1.2)
# =============================================================================================

def test_hash_comments_are_ignored():
    net = parse('# a net\nname: "n"  # trailing comment\n# end')
    assert net.name == "n"


def test_submessage_may_be_written_with_a_colon():
    assert parse('layer: { name: "a" }').layer[0].name == "a"


def test_empty_submessage_with_a_colon_is_accepted():
    net = parse('layer { name: "a" convolution_param: {} }')
    assert net.layer[0].HasField("convolution_param")


def test_angle_brackets_delimit_a_submessage():
    assert parse('layer < name: "a" >').layer[0].name == "a"


def test_strings_may_use_single_quotes():
    assert parse("layer { type: 'Python' }").layer[0].type == "Python"


def test_adjacent_string_literals_concatenate():
    assert parse("name: \"conv\" '1' \"_a\"").name == "conv1_a"


def test_enum_value_may_be_an_identifier():
    pooling = parse("layer { pooling_param { pool: AVE } }").layer[0].pooling_param
    assert pooling.pool == caffe_pb2.PoolingParameter.AVE


def test_enum_value_may_be_a_number():
    pooling = parse("layer { pooling_param { pool: 1 } }").layer[0].pooling_param
    assert pooling.pool == caffe_pb2.PoolingParameter.AVE


@pytest.mark.parametrize("spelling, value", [
    ("true", True), ("True", True), ("t", True), ("1", True),
    ("false", False), ("False", False), ("f", False), ("0", False),
])
def test_bool_spellings_accepted_by_libprotobuf(spelling, value):
    net = parse(f"force_backward: {spelling}")
    assert net.HasField("force_backward") and net.force_backward is value


def test_yes_is_not_a_bool():
    with pytest.raises(PrototxtError, match="force_backward"):
        parse("force_backward: yes")


@pytest.mark.parametrize("spelling, value", [
    ("1e-4", 1e-4), ("1E-04", 1e-4), (".0001", 1e-4), ("0.75f", 0.75), ("0.75F", 0.75),
    ("5f", 5.0), ("2", 2.0), ("-0.5", -0.5), ("inf", math.inf), ("-inf", -math.inf),
])
def test_float_spellings(spelling, value):
    beta = parse(f"layer {{ lrn_param {{ beta: {spelling} }} }}").layer[0].lrn_param.beta
    assert beta == pytest.approx(value, rel=1e-6)


def test_nan_is_a_float():
    beta = parse("layer { lrn_param { beta: nan } }").layer[0].lrn_param.beta
    assert math.isnan(beta)


def test_negative_integers():
    net = parse("layer { reshape_param { shape { dim: 0 dim: -1 } } }")
    assert list(net.layer[0].reshape_param.shape.dim) == [0, -1]


def test_comma_and_semicolon_may_separate_fields():
    net = parse('name: "n", input: "a"; input: "b"\nlayer { name: "l"; top: "t", };')
    assert (net.name, list(net.input), net.layer[0].top[0]) == ("n", ["a", "b"], "t")


def test_repeated_scalar_in_list_syntax():
    assert list(parse("input_dim: [1, 3, 224, 224]").input_dim) == [1, 3, 224, 224]


def test_repeated_fields_accumulate_when_interleaved_with_others():
    # The VGG V1 deploy file puts force_backward between input and the input_dim lines.
    net = parse('input: "data"\ninput_dim: 10\nforce_backward: true\ninput_dim: 3\n'
                'input_dim: 224 input_dim: 224')
    assert list(net.input_dim) == [10, 3, 224, 224] and net.force_backward


def test_fields_may_come_in_any_order():
    net = parse('layer { top: "c" convolution_param { kernel_size: 3 } bottom: "d" name: "c" }')
    layer = net.layer[0]
    assert (layer.name, list(layer.bottom), list(layer.top)) == ("c", ["d"], ["c"])


def test_repeated_convolution_fields_take_several_values():
    conv = parse("layer { convolution_param { pad: 1 pad: 2 kernel_size: [3, 5] } }") \
        .layer[0].convolution_param
    assert (list(conv.pad), list(conv.kernel_size)) == ([1, 2], [3, 5])


# =============================================================================================
# Parse errors
# =============================================================================================

def test_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "n"\nlayer {\n  name: "a"\n  top "b"\n}\n', encoding="utf-8")
    with pytest.raises(PrototxtError) as error:
        read_net_prototxt(path)
    assert str(error.value).startswith(f"{path}:4:7: ")


def test_parse_error_location_defaults_to_string():
    with pytest.raises(PrototxtError, match=r"^<string>:1:\d+: "):
        parse_net_text("name: ")


def test_parse_error_keeps_protobufs_explanation_without_its_own_location_prefix():
    with pytest.raises(PrototxtError) as error:
        parse('layer {\n  name: "a"\n')
    assert str(error.value) == 'test.prototxt:2:9: Expected "}".'


def test_unknown_field_is_rejected_naming_message_and_field():
    with pytest.raises(PrototxtError) as error:
        parse("layer {\n  pooling_param { ceil_mode: true }\n}")
    assert str(error.value) == ('test.prototxt:2:19: Message type "caffe.PoolingParameter" '
                                'has no field named "ceil_mode".')


def test_post_1_0_round_mode_is_rejected():
    with pytest.raises(PrototxtError, match='no field named "round_mode"'):
        parse("layer { pooling_param { round_mode: FLOOR } }")


def test_unknown_enum_value_is_rejected():
    with pytest.raises(PrototxtError, match="has no value named MEDIAN"):
        parse("layer { pooling_param { pool: MEDIAN } }")


def test_v2_type_spelling_is_rejected_in_a_v1_layer():
    with pytest.raises(PrototxtError, match='"caffe.V1LayerParameter.LayerType" has no value'):
        parse("layers { type: Convolution }")


def test_singular_field_given_twice_is_rejected():
    with pytest.raises(PrototxtError, match='multiple "name"'):
        parse('name: "a" name: "b"')


def test_missing_file_is_reported_with_its_path(tmp_path):
    path = tmp_path / "absent.prototxt"
    with pytest.raises(PrototxtError) as error:
        read_net_prototxt(path)
    assert str(error.value) == f"{path}: no such file"


def test_binary_file_is_reported_as_not_utf8(tmp_path):
    path = tmp_path / "weights.caffemodel"
    path.write_bytes(b'\n\x08CaffeNet\x12\xff\xfe\x00')
    with pytest.raises(PrototxtError) as error:
        read_net_prototxt(path)
    assert str(error.value).startswith(f"{path}:2: not a UTF-8 text file")


def test_file_is_read_as_utf8(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "Netz für Bäume"', encoding="utf-8")
    assert read_net_prototxt(path).name == "Netz für Bäume"


def test_utf8_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_bytes(b'\xef\xbb\xbfname: "n"')
    assert read_net_prototxt(path).name == "n"


# =============================================================================================
# Current-format nets pass through
# =============================================================================================

V2_NET = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }
"""


def test_current_format_net_is_unchanged():
    assert upgrade(V2_NET) == parse(V2_NET)


def test_upgrade_does_not_modify_its_argument():
    net = parse(VGG_STYLE_V1)
    before = net.SerializeToString()
    upgrade_net(net, "test.prototxt")
    assert net.SerializeToString() == before


def test_net_inputs_stay_at_net_level_without_an_input_layer():
    # Deliberate deviation from Caffe's step 4 (spec §2.4): no "input" layer is prepended.
    net = upgrade(V2_NET)
    assert [layer.name for layer in net.layer] == ["conv", "prob"]
    assert list(net.input) == ["data"]
    assert list(net.input_shape[0].dim) == [1, 3, 8, 8]


def test_mixing_layer_and_layers_is_refused():
    with pytest.raises(PrototxtError) as error:
        upgrade('layer { name: "a" type: "ReLU" }\nlayers { name: "b" type: RELU }')
    assert str(error.value).startswith("test.prototxt: the net has both 'layer' entries")


def test_batch_norm_with_three_params_gets_zero_learning_rates():
    net = upgrade('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } '
                  'param { lr_mult: 1 decay_mult: 2 } param { } }')
    assert params(net.layer[0]) == [(0, 0), (0, 0), (0, 0)]


def test_batch_norm_with_other_param_count_is_left_alone():
    net = upgrade('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { } }')
    assert params(net.layer[0]) == [(1, 1), (1, 1)]


# =============================================================================================
# V1 -> V2 (§2.3)
# =============================================================================================

VGG_STYLE_V1 = """
name: "VGG_ILSVRC_16_layers"
input: "data"
input_dim: 10
input_dim: 3
force_backward: true
input_dim: 224
input_dim: 224
layers {
  bottom: "data"
  top: "conv1_1"
  name: "conv1_1"
  type: CONVOLUTION
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param { num_output: 64 pad: 1 kernel_size: 3 }
}
layers { bottom: "conv1_1" top: "conv1_1" name: "relu1_1" type: RELU }
layers {
  bottom: "conv1_1" top: "pool1" name: "pool1" type: POOLING
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layers {
  bottom: "pool1" top: "fc6" name: "fc6" type: INNER_PRODUCT
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  inner_product_param { num_output: 4096 }
}
layers { bottom: "fc6" top: "fc6" name: "relu6" type: RELU }
layers { bottom: "fc6" top: "fc6" name: "drop6" type: DROPOUT dropout_param { dropout_ratio: 0.5 } }
layers { bottom: "fc6" top: "prob" name: "prob" type: SOFTMAX }
"""


def test_v1_net_becomes_current_layers_with_type_strings():
    net = upgrade(VGG_STYLE_V1)
    assert len(net.layers) == 0
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("conv1_1", "Convolution"), ("relu1_1", "ReLU"), ("pool1", "Pooling"),
        ("fc6", "InnerProduct"), ("relu6", "ReLU"), ("drop6", "Dropout"), ("prob", "Softmax")]


def test_v1_blobs_lr_and_weight_decay_become_param_specs():
    conv = upgrade(VGG_STYLE_V1).layer[0]
    assert params(conv) == [(1, 1), (2, 0)]


def test_v1_layer_without_learning_rates_gets_no_param_specs():
    assert len(upgrade(VGG_STYLE_V1).layer[1].param) == 0


def test_v1_in_place_layer_keeps_bottom_and_top():
    relu = upgrade(VGG_STYLE_V1).layer[1]
    assert (list(relu.bottom), list(relu.top)) == (["conv1_1"], ["conv1_1"])


def test_v1_sub_parameters_are_copied_unchanged():
    net, v1 = upgrade(VGG_STYLE_V1), parse(VGG_STYLE_V1)
    assert net.layer[0].convolution_param == v1.layers[0].convolution_param
    assert net.layer[2].pooling_param == v1.layers[2].pooling_param
    assert net.layer[3].inner_product_param.num_output == 4096
    assert net.layer[5].dropout_param.dropout_ratio == 0.5


def test_v1_net_level_fields_are_kept():
    net = upgrade(VGG_STYLE_V1)
    assert net.name == "VGG_ILSVRC_16_layers"
    assert list(net.input) == ["data"] and list(net.input_dim) == [10, 3, 224, 224]
    assert net.force_backward


def test_v1_param_names_and_share_modes_become_param_specs():
    net = upgrade('layers { name: "ip" type: INNER_PRODUCT param: "w" param: "b" '
                  'blob_share_mode: PERMISSIVE blobs_lr: 1 blobs_lr: 2 weight_decay: 3 }')
    layer = net.layer[0]
    assert [p.name for p in layer.param] == ["w", "b"]
    assert layer.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not layer.param[1].HasField("share_mode")
    assert params(layer) == [(1, 3), (2, 1)]


def test_v1_blobs_are_copied_verbatim_with_legacy_dims():
    v1 = caffe_pb2.NetParameter()
    layer = v1.layers.add(name="fc8", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    layer.blobs.add(num=1, channels=1, height=2, width=3, data=[1, 2, 3, 4, 5, 6])
    blob = upgrade_net(v1, "weights.caffemodel").layer[0].blobs[0]
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 1, 2, 3)
    assert not blob.HasField("shape") and list(blob.data) == [1, 2, 3, 4, 5, 6]


def test_v1_loss_weight_include_exclude_and_loss_param_are_copied():
    layer = upgrade('layers { name: "loss" type: SOFTMAX_LOSS loss_weight: 0.3 '
                    'include { phase: TRAIN } loss_param { ignore_label: 255 } }').layer[0]
    assert layer.type == "SoftmaxWithLoss"
    assert list(layer.loss_weight) == [pytest.approx(0.3)]
    assert layer.include[0].phase == caffe_pb2.TRAIN
    assert layer.loss_param.ignore_label == 255


def test_v1_none_type_becomes_empty_type_string():
    layer = upgrade('layers { name: "x" type: NONE }').layer[0]
    assert layer.HasField("type") and layer.type == ""


def test_v1_layer_without_type_gets_no_type():
    assert not upgrade('layers { name: "x" }').layer[0].HasField("type")


# The whole table of spec §1.6.
V1_TYPE_TABLE = {
    "NONE": "", "ACCURACY": "Accuracy", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONVOLUTION": "Convolution", "DATA": "Data", "DROPOUT": "Dropout",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "POOLING": "Pooling", "RELU": "ReLU",
    "SIGMOID": "Sigmoid", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split", "TANH": "TanH", "WINDOW_DATA": "WindowData", "ELTWISE": "Eltwise",
    "POWER": "Power", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "HINGE_LOSS": "HingeLoss", "MEMORY_DATA": "MemoryData", "ARGMAX": "ArgMax",
    "THRESHOLD": "Threshold", "DUMMY_DATA": "DummyData", "SLICE": "Slice", "MVN": "MVN",
    "ABSVAL": "AbsVal", "SILENCE": "Silence", "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "EXP": "Exp", "DECONVOLUTION": "Deconvolution",
}


def test_v1_type_table_covers_every_enum_value():
    assert set(caffe_pb2.V1LayerParameter.LayerType.keys()) == set(V1_TYPE_TABLE)


@pytest.mark.parametrize("enum_name, type_name", sorted(V1_TYPE_TABLE.items()))
def test_v1_enum_upgrades_to_its_type_string(enum_name, type_name):
    assert upgrade(f"layers {{ type: {enum_name} }}").layer[0].type == type_name


@pytest.mark.parametrize("enum_name, type_name",
                         sorted((e, t) for e, t in V1_TYPE_TABLE.items() if t))
def test_type_string_maps_back_to_its_v1_enum_number(enum_name, type_name):
    assert v1_type_number(type_name) == caffe_pb2.V1LayerParameter.LayerType.Value(enum_name)
    assert v1_type_name(v1_type_number(type_name)) == type_name


def test_type_without_v1_enum_has_no_number():
    with pytest.raises(ValueError, match="BatchNorm"):
        v1_type_number("BatchNorm")


# =============================================================================================
# Data-layer settings -> transform_param (§2.1 step 2)
# =============================================================================================

def test_v1_data_layer_preprocessing_moves_to_transform_param():
    net = upgrade('layers { name: "data" type: DATA top: "data" data_param { source: "db" '
                  'scale: 0.5 mean_file: "m.binaryproto" crop_size: 227 mirror: true } }')
    layer = net.layer[0]
    transform = layer.transform_param
    assert (transform.scale, transform.mean_file, transform.crop_size, transform.mirror) == \
        (0.5, "m.binaryproto", 227, True)
    assert layer.data_param == caffe_pb2.DataParameter(source="db")


def test_v1_image_and_window_data_preprocessing_moves_to_transform_param():
    net = upgrade('layers { type: IMAGE_DATA image_data_param { crop_size: 10 } }\n'
                  'layers { type: WINDOW_DATA window_data_param { mirror: true } }')
    assert net.layer[0].transform_param.crop_size == 10
    assert not net.layer[0].image_data_param.HasField("crop_size")
    assert net.layer[1].transform_param.mirror
    assert not net.layer[1].window_data_param.HasField("mirror")


def test_data_settings_of_other_layer_types_are_not_moved():
    layer = upgrade('layers { type: CONVOLUTION data_param { scale: 2 } }').layer[0]
    assert layer.data_param.scale == 2 and not layer.HasField("transform_param")


# =============================================================================================
# V0 -> V1 -> V2 (§2.2)
# =============================================================================================

V0_NET = """
name: "v0net"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 32 input_dim: 32
layers {
  layer { name: "pad1" type: "padding" pad: 2 }
  bottom: "data" top: "pad1"
}
layers {
  layer {
    name: "conv1" type: "conv" num_output: 16 kernelsize: 5 stride: 1 group: 1 biasterm: false
    weight_filler { type: "gaussian" std: 0.01 }
    blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers {
  layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 pad: 1 }
  bottom: "conv1" top: "pool1"
}
layers {
  layer { name: "norm1" type: "lrn" local_size: 3 alpha: 5e-05 beta: 0.75 k: 2 }
  bottom: "pool1" top: "norm1"
}
layers {
  layer { name: "fc1" type: "innerproduct" num_output: 10 bias_filler { type: "constant" } }
  bottom: "norm1" top: "fc1"
}
layers { layer { name: "drop1" type: "dropout" dropout_ratio: 0.4 } bottom: "fc1" top: "fc1" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc1" top: "prob" }
"""


def test_v0_net_becomes_current_layers():
    net = upgrade(V0_NET)
    assert len(net.layers) == 0
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("conv1", "Convolution"), ("relu1", "ReLU"), ("pool1", "Pooling"), ("norm1", "LRN"),
        ("fc1", "InnerProduct"), ("drop1", "Dropout"), ("prob", "Softmax")]


def test_v0_padding_layer_is_merged_into_the_convolution_it_feeds():
    conv = upgrade(V0_NET).layer[0]
    assert list(conv.bottom) == ["data"]
    assert list(conv.convolution_param.pad) == [2]


def test_v0_convolution_fields_move_to_convolution_param():
    conv = upgrade(V0_NET).layer[0].convolution_param
    assert (conv.num_output, list(conv.kernel_size), list(conv.stride), conv.group) == \
        (16, [5], [1], 1)
    assert conv.HasField("bias_term") and not conv.bias_term
    assert conv.weight_filler == caffe_pb2.FillerParameter(type="gaussian", std=0.01)


def test_v0_blobs_lr_and_weight_decay_reach_param_specs():
    assert params(upgrade(V0_NET).layer[0]) == [(1, 1), (2, 0)]


def test_v0_pooling_fields_move_to_pooling_param():
    pooling = upgrade(V0_NET).layer[2].pooling_param
    assert pooling == caffe_pb2.PoolingParameter(
        pool=caffe_pb2.PoolingParameter.AVE, kernel_size=3, stride=2, pad=1)


def test_v0_lrn_fields_move_to_lrn_param():
    lrn = upgrade(V0_NET).layer[3].lrn_param
    assert (lrn.local_size, lrn.beta, lrn.k) == (3, 0.75, 2)
    assert lrn.alpha == pytest.approx(5e-05)


def test_v0_inner_product_and_dropout_fields_move_to_their_params():
    net = upgrade(V0_NET)
    assert net.layer[4].inner_product_param == caffe_pb2.InnerProductParameter(
        num_output=10, bias_filler=caffe_pb2.FillerParameter(type="constant"))
    assert net.layer[5].dropout_param.dropout_ratio == pytest.approx(0.4)


def test_v0_net_level_inputs_are_kept():
    net = upgrade(V0_NET)
    assert (net.name, list(net.input), list(net.input_dim)) == ("v0net", ["data"], [1, 3, 32, 32])


def test_v0_upgrade_of_a_clean_net_warns_about_nothing():
    _, problems = upgrade_quietly(V0_NET)
    assert problems == []


def test_v0_weights_are_carried_over():
    v0 = caffe_pb2.NetParameter()
    entry = v0.layers.add()
    entry.layer.name, entry.layer.type = "fc", "innerproduct"
    entry.layer.blobs.add(num=1, channels=1, height=1, width=2, data=[0.5, 1.5])
    blob = upgrade_net(v0, "old.caffemodel").layer[0].blobs[0]
    assert (blob.width, list(blob.data)) == (2, [0.5, 1.5])


def test_v0_padding_layer_also_merges_into_pooling():
    net = upgrade('input: "x" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" '
                  'top: "px" } layers { layer { name: "pool" type: "pool" kernelsize: 3 } '
                  'bottom: "px" top: "y" }')
    assert list(net.layer[0].bottom) == ["x"] and net.layer[0].pooling_param.pad == 1


def test_v0_padding_feeding_another_type_is_fatal():
    with pytest.raises(PrototxtError) as error:
        upgrade('input: "x" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" '
                'top: "px" } layers { layer { name: "r" type: "relu" } bottom: "px" top: "y" }')
    message = str(error.value)
    assert message.startswith("test.prototxt: layer 'r'") and "padding" in message


def test_v0_padding_with_two_outputs_is_fatal():
    with pytest.raises(PrototxtError, match="padding layer 'p' must have exactly one input"):
        upgrade('input: "x" layers { layer { name: "p" type: "padding" } bottom: "x" top: "a" '
                'top: "b" } layers { layer { name: "c" type: "conv" } bottom: "a" top: "y" }')


def test_v0_unknown_layer_type_is_fatal():
    with pytest.raises(PrototxtError) as error:
        upgrade('layers { layer { name: "w" type: "warp" } }')
    assert str(error.value) == "test.prototxt: layer 'w': unknown V0 layer type 'warp'"


def test_v0_input_from_nowhere_is_fatal():
    with pytest.raises(PrototxtError, match="layer 'c': input blob 'ghost'"):
        upgrade('layers { layer { name: "c" type: "conv" } bottom: "ghost" top: "y" }')


def test_v0_data_layer_fields_are_routed_by_type():
    layer = upgrade('layers { layer { name: "d" type: "data" source: "db" batchsize: 64 '
                    'rand_skip: 5 meanfile: "m" cropsize: 227 mirror: true scale: 0.5 } '
                    'top: "data" }').layer[0]
    assert layer.data_param == caffe_pb2.DataParameter(source="db", batch_size=64, rand_skip=5)
    assert layer.transform_param == caffe_pb2.TransformationParameter(
        mean_file="m", crop_size=227, mirror=True, scale=0.5)


def test_v0_field_on_a_type_that_does_not_use_it_is_dropped_with_a_warning():
    net, problems = upgrade_quietly('layers { layer { name: "r" type: "relu" num_output: 3 } }')
    assert net.layer[0].type == "ReLU" and not net.layer[0].HasField("convolution_param")
    assert problems == ["test.prototxt: layer 'r': V0 field 'num_output' does not apply to a "
                        "layer of type 'relu'; dropped"]


def test_v0_field_without_any_counterpart_is_dropped_with_a_warning():
    _, problems = upgrade_quietly('layers { layer { name: "i" type: "images" new_num: 2 '
                                  'new_height: 32 } }')
    assert problems == ["test.prototxt: layer 'i': V0 field 'new_num' has no counterpart in "
                        "the current format; dropped"]


def test_v0_warnings_are_collected_for_every_layer():
    _, problems = upgrade_quietly('layers { layer { name: "a" type: "relu" group: 2 } }\n'
                                  'layers { layer { name: "b" type: "tanh" pool: AVE } }')
    assert [p.split(":")[1].strip() for p in problems] == ["layer 'a'", "layer 'b'"]


# =============================================================================================
# The real deploy files of the reference data
# =============================================================================================

REFERENCE_MODELS = ["caffenet", "googlenet", "vgg16", "smallnet"]


@pytest.mark.parametrize("model", REFERENCE_MODELS)
def test_reference_deploy_file_gives_the_layers_caffe_instantiated(shared_reference, model):
    # manifest.json lists the layers the original Caffe fork built, plus its auto-inserted
    # Split layers (which are not in any prototxt).
    model_dir = shared_reference / "models" / model
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    net = read_net_prototxt(model_dir / "deploy.prototxt")
    assert len(net.layers) == 0
    assert [(layer.name, layer.type) for layer in net.layer] == [
        (entry["name"], entry["type"]) for entry in manifest["layers"] if entry["type"] != "Split"]


@pytest.mark.parametrize("model", REFERENCE_MODELS)
def test_reference_deploy_file_keeps_its_input_at_net_level(shared_reference, model):
    model_dir = shared_reference / "models" / model
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    net = read_net_prototxt(model_dir / "deploy.prototxt")
    dims = list(net.input_shape[0].dim) if len(net.input_shape) else list(net.input_dim)
    assert list(net.input) == ["data"] and dims == manifest["input_shape"]


@pytest.mark.parametrize("model", ["caffenet", "googlenet"])
def test_original_batch10_deploy_file_parses(shared_reference, model):
    net = read_net_prototxt(shared_reference / "models" / model /
                            "deploy_batch10_original.prototxt")
    assert list(net.input_shape[0].dim)[0] == 10 and len(net.layer) > 0


def test_vgg16_v1_deploy_file_keeps_its_layer_settings(shared_reference):
    net = read_net_prototxt(shared_reference / "models" / "vgg16" / "deploy.prototxt")
    conv, pool = net.layer[0].convolution_param, net.layer[4].pooling_param
    assert (conv.num_output, list(conv.pad), list(conv.kernel_size)) == (64, [1], [3])
    assert (pool.pool, pool.kernel_size, pool.stride) == (caffe_pb2.PoolingParameter.MAX, 2, 2)


# Documented gaps (parse_net_text docstring): libprotobuf accepts these, Python's parser does not.

def test_minus_sign_apart_from_its_number_is_not_supported():
    with pytest.raises(PrototxtError, match=r"^test\.prototxt:1:\d+: .*Couldn't parse integer"):
        parse("input_dim: - 1")


def test_hexadecimal_float_value_is_not_supported():
    with pytest.raises(PrototxtError, match="Couldn't parse float: 0x1"):
        parse("layer { lrn_param { beta: 0x1 } }")
