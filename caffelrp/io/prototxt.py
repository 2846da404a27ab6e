"""Caffe net definitions in text format (.prototxt): parsing, and upgrading old generations.

A prototxt is a ``caffe.NetParameter`` in protobuf text format. Three generations exist
(caffe-format.md §0): V0 (``layers { layer { type: "conv" ... } }``), V1 (``layers { type:
CONVOLUTION ... }``) and the current one (``layer { type: "Convolution" ... }``). Like Caffe,
everything is upgraded to the current form right after parsing, so the rest of caffelrp only
ever sees ``NetParameter.layer``.

Deviation from Caffe: the net-level inputs (``input`` / ``input_dim`` / ``input_shape``) are
NOT turned into an ``"input"`` layer of type Input (step 4 of Caffe's upgrade, spec §2.4). The
original LRP toolbox is a Caffe fork from 2015, older than that step: it numbers layers without
such a layer (e.g. "fc8 is layer 21" in CaffeNet), and the net builder reads the net-level
inputs directly. Nets that already contain an Input layer are of course left as they are.
"""

from __future__ import annotations

import os
import re
import warnings

from google.protobuf import text_format

from ..errors import PrototxtError
from ..proto import caffe_pb2

__all__ = [
    "NetUpgradeWarning",
    "parse_net_text",
    "read_net_prototxt",
    "upgrade_net",
    "v1_type_name",
    "v1_type_number",
]


class NetUpgradeWarning(UserWarning):
    """An old-format field has no place in the current format and was dropped (as in Caffe)."""


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

# protobuf puts "LINE:COL : " in front of its own message; we re-emit the location ourselves.
_PROTOBUF_LOCATION_PREFIX = re.compile(r"^\d+(?::\d+)? : ")


def parse_net_text(text: str, filename: str = "<string>") -> caffe_pb2.NetParameter:
    """Parse prototxt text into a NetParameter, exactly as written (no upgrade).

    Python's text_format parser accepts everything real prototxt files use (spec §1.2),
    including ``0.75f``, ``True``/``t``, single quotes, ``field: { }``, list syntax and ``,``/``;``
    separators, so the text is handed over unchanged. Unknown fields, unknown enum values and a
    singular field given twice are rejected, as libprotobuf does.

    Two spellings libprotobuf takes and Python's parser does not, neither seen in real files,
    are left unsupported rather than patched with a text rewrite that could touch strings:
    a minus sign separated from its number by blanks (``dim: - 1``) and hexadecimal/octal
    integers given for a float field (``beta: 0x1``).

    Raises PrototxtError("FILE:LINE:COL: <protobuf's message>") on a syntax error.
    """
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as error:
        what = _PROTOBUF_LOCATION_PREFIX.sub("", str(error))
        line, column = error.GetLine(), error.GetColumn()  # both 1-based
        if line is None:
            where = filename
        elif column is None:
            where = f"{filename}:{line}"
        else:
            where = f"{filename}:{line}:{column}"
        raise PrototxtError(f"{where}: {what}") from None
    return net


def read_net_prototxt(path: str | os.PathLike) -> caffe_pb2.NetParameter:
    """Read a .prototxt file (UTF-8), parse it and upgrade it to the current format.

    Every failure (missing file, not UTF-8, syntax error, a net Caffe would refuse to upgrade)
    is a PrototxtError whose message starts with the path.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise PrototxtError(f"{name}: no such file") from None
    except OSError as error:
        raise PrototxtError(f"{name}: cannot read the file: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise PrototxtError(
            f"{name}:{line}: not a UTF-8 text file (byte 0x{raw[error.start]:02x} at offset "
            f"{error.start}); a prototxt is text - is this a binary .caffemodel?"
        ) from None
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    return upgrade_net(parse_net_text(text, name), name)


# ---------------------------------------------------------------------------------------------
# Type tables
# ---------------------------------------------------------------------------------------------

# V1 LayerType enum name -> current type string (spec §1.6). NONE has no layer behind it; the
# empty string makes the net builder report an unknown type.
_V1_TYPE_TO_STRING = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "ELTWISE": "Eltwise",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SLICE": "Slice",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "TANH": "TanH",
    "THRESHOLD": "Threshold",
    "WINDOW_DATA": "WindowData",
}

_V1_LAYER_TYPE = caffe_pb2.V1LayerParameter.LayerType
_V1_NUMBER_TO_STRING = {
    _V1_LAYER_TYPE.Value(enum_name): type_name
    for enum_name, type_name in _V1_TYPE_TO_STRING.items()
}
_STRING_TO_V1_NUMBER = {
    type_name: number for number, type_name in _V1_NUMBER_TO_STRING.items() if type_name
}

# V0 type string -> V1 enum name (spec §2.2). "padding" is handled before this table is used.
_V0_TYPE_TO_V1 = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}


def v1_type_name(number: int) -> str:
    """Current type string of a V1 LayerType enum value ("" for NONE or an unknown number)."""
    return _V1_NUMBER_TO_STRING.get(number, "")


def v1_type_number(type_name: str) -> int:
    """V1 LayerType enum value of a current type string; ValueError if V1 had no such type."""
    try:
        return _STRING_TO_V1_NUMBER[type_name]
    except KeyError:
        raise ValueError(f"layer type {type_name!r} has no V1 LayerType enum value") from None


# ---------------------------------------------------------------------------------------------
# Upgrade driver (spec §2.1)
# ---------------------------------------------------------------------------------------------


def upgrade_net(net: caffe_pb2.NetParameter, source: str) -> caffe_pb2.NetParameter:
    """Return a copy of ``net`` in the current format, following Caffe's UpgradeNetAsNeeded.

    Steps (spec §2.1): 1. V0 -> V1, 2. data-layer settings -> transform_param, 3. V1 -> V2,
    5. BatchNorm with three ``param`` entries gets lr_mult = decay_mult = 0.
    Step 4 (net inputs -> an "input" layer) is deliberately skipped: see the module docstring.

    ``source`` names the file in messages. Fatal problems raise PrototxtError; a field that has
    no place in the upgraded form is dropped with a NetUpgradeWarning, as Caffe logs and
    continues. ``net`` itself is not modified.
    """
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net)
    if len(upgraded.layer) and len(upgraded.layers):
        raise PrototxtError(
            f"{source}: the net has both 'layer' entries (current format) and 'layers' entries "
            f"(V0/V1 format); Caffe refuses to upgrade such a mix. Rewrite the "
            f"'layers {{ type: ENUM ... }}' entries as 'layer {{ type: \"TypeName\" ... }}'."
        )
    problems: list[str] = []
    if any(entry.HasField("layer") for entry in upgraded.layers):
        upgraded = _upgrade_v0_net(upgraded, source, problems)
    _move_data_settings_to_transform_param(upgraded)
    if len(upgraded.layers):
        upgraded = _upgrade_v1_net(upgraded, source, problems)
    _freeze_batch_norm_statistics(upgraded)
    for problem in problems:
        warnings.warn(problem, NetUpgradeWarning, stacklevel=2)
    return upgraded


def _describe_layer(name: str, index: int) -> str:
    return f"layer '{name}'" if name else f"layer #{index} (unnamed)"


def _set_field(message, field_name: str, value) -> None:
    """Assign, append (repeated scalar) or copy (message) ``value`` into ``message.field_name``."""
    field = message.DESCRIPTOR.fields_by_name[field_name]
    if field.message_type is not None:
        getattr(message, field_name).CopyFrom(value)
    elif field.is_repeated:
        getattr(message, field_name).append(value)
    else:
        setattr(message, field_name, value)


# ---------------------------------------------------------------------------------------------
# Step 1: V0 -> V1 (spec §2.2)
# ---------------------------------------------------------------------------------------------

_CONV_OR_IP = {"conv": "convolution_param", "innerproduct": "inner_product_param"}
_CONV_OR_POOL = {"conv": "convolution_param", "pool": "pooling_param"}
_SOURCE_OWNERS = {
    "data": "data_param",
    "hdf5_data": "hdf5_data_param",
    "images": "image_data_param",
    "window_data": "window_data_param",
    "infogain_loss": "infogain_loss_param",
}
_BATCH_SIZE_OWNERS = {
    "data": "data_param",
    "hdf5_data": "hdf5_data_param",
    "images": "image_data_param",
    "window_data": "window_data_param",
}
_ANY_TYPE = "*"


def _route(owners: dict[str, str], field_name: str) -> dict[str, tuple[str, str]]:
    return {v0_type: (param, field_name) for v0_type, param in owners.items()}


# V0 field -> {V0 layer type (or "*" for any): (V1 sub-message, field in it)}.
# Repeated targets (convolution pad/kernel_size/stride) are appended to; V0 fields not listed
# here (new_num, new_channels) have no V1 counterpart at all.
_V0_FIELD_ROUTES: dict[str, dict[str, tuple[str, str]]] = {
    "num_output": _route(_CONV_OR_IP, "num_output"),
    "biasterm": _route(_CONV_OR_IP, "bias_term"),
    "weight_filler": _route(_CONV_OR_IP, "weight_filler"),
    "bias_filler": _route(_CONV_OR_IP, "bias_filler"),
    "pad": _route(_CONV_OR_POOL, "pad"),
    "kernelsize": _route(_CONV_OR_POOL, "kernel_size"),
    "stride": _route(_CONV_OR_POOL, "stride"),
    "group": {"conv": ("convolution_param", "group")},
    # V0 PoolMethod and PoolingParameter.PoolMethod share their numbering.
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": _route(_SOURCE_OWNERS, "source"),
    "batchsize": _route(_BATCH_SIZE_OWNERS, "batch_size"),
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", "")},
    # Preprocessing settings go to transform_param whatever the type.
    "scale": {_ANY_TYPE: ("transform_param", "scale")},
    "meanfile": {_ANY_TYPE: ("transform_param", "mean_file")},
    "cropsize": {_ANY_TYPE: ("transform_param", "crop_size")},
    "mirror": {_ANY_TYPE: ("transform_param", "mirror")},
}

# Copied one to one (field names of V0LayerParameter -> V1LayerParameter).
_V0_DIRECT_FIELDS = {"name": "name", "blobs": "blobs", "blobs_lr": "blobs_lr",
                     "weight_decay": "weight_decay"}

# The only net-level fields a V0 net keeps (Caffe's UpgradeV0Net).
_V0_NET_FIELDS = ("name", "input", "input_dim", "force_backward")


def _upgrade_v0_net(net, source, problems):
    entries = _merge_padding_layers(net, source)
    upgraded = caffe_pb2.NetParameter()
    for field, value in net.ListFields():
        if field.name in _V0_NET_FIELDS:
            _copy_field(upgraded, field.name, value)
        elif field.name != "layers":
            problems.append(f"{source}: net-level field '{field.name}' is not part of a V0 net "
                            f"and is dropped by the V0 upgrade")
    for index, entry in enumerate(entries):
        upgraded.layers.add().CopyFrom(_upgrade_v0_layer(entry, index, source, problems))
    return upgraded


def _copy_field(message, field_name, value):
    field = message.DESCRIPTOR.fields_by_name[field_name]
    if field.is_repeated:
        getattr(message, field_name).extend(value)
    else:
        _set_field(message, field_name, value)


def _merge_padding_layers(net, source):
    """Drop V0 "padding" layers, giving their pad and input to the conv/pool layer they feed.

    Returns the remaining layer entries (copies). Mirrors Caffe's UpgradeV0PaddingLayers,
    including its fatal checks (spec §2.2).
    """
    # Blob name -> index (in net.layers) of the last layer that wrote it; -1 = net input.
    last_writer = {name: -1 for name in net.input}
    kept = []
    for index, entry in enumerate(net.layers):
        v0 = entry.layer
        is_padding = v0.type == "padding"
        if not is_padding:
            kept.append(caffe_pb2.V1LayerParameter())
            kept[-1].CopyFrom(entry)
        for slot, blob in enumerate(entry.bottom):
            if blob not in last_writer:
                raise PrototxtError(
                    f"{source}: {_describe_layer(v0.name, index)}: input blob '{blob}' is "
                    f"neither a net input nor the output of an earlier layer"
                )
            writer_index = last_writer[blob]
            if writer_index < 0 or net.layers[writer_index].layer.type != "padding":
                continue
            padding = net.layers[writer_index]
            where = f"{source}: {_describe_layer(v0.name, index)}"
            if v0.type not in ("conv", "pool"):
                raise PrototxtError(f"{where}: a V0 padding layer may only feed a 'conv' or "
                                    f"'pool' layer, not one of type '{v0.type}'")
            if len(entry.bottom) != 1:
                raise PrototxtError(f"{where}: a layer fed by a V0 padding layer must have "
                                    f"exactly one input")
            if len(padding.bottom) != 1 or len(padding.top) != 1:
                raise PrototxtError(
                    f"{where}: its V0 padding layer '{padding.layer.name}' must have exactly "
                    f"one input and one output")
            kept[-1].layer.pad = padding.layer.pad
            kept[-1].bottom[slot] = padding.bottom[0]
        for blob in entry.top:
            last_writer[blob] = index
    return kept


def _upgrade_v0_layer(entry, index, source, problems):
    """Convert one V0 connection (bottom/top + nested V0 layer) to a V1 layer."""
    v1 = caffe_pb2.V1LayerParameter()
    v1.bottom.extend(entry.bottom)
    v1.top.extend(entry.top)
    if not entry.HasField("layer"):
        # A V1-style entry inside a V0 net: Caffe keeps nothing but the connection.
        dropped = [f.name for f, _ in entry.ListFields() if f.name not in ("bottom", "top")]
        if dropped:
            problems.append(
                f"{source}: {_describe_layer(entry.name, index)} has no V0 'layer' although "
                f"the net is in V0 format; its fields {', '.join(dropped)} are dropped")
        return v1
    v0 = entry.layer
    where = f"{source}: {_describe_layer(v0.name, index)}"
    if v0.HasField("type"):
        if v0.type not in _V0_TYPE_TO_V1:
            raise PrototxtError(f"{where}: unknown V0 layer type '{v0.type}'")
        v1.type = _V1_LAYER_TYPE.Value(_V0_TYPE_TO_V1[v0.type])
    for field, value in v0.ListFields():
        if field.name == "type":
            continue
        if field.name in _V0_DIRECT_FIELDS:
            _copy_field(v1, _V0_DIRECT_FIELDS[field.name], value)
            continue
        routes = _V0_FIELD_ROUTES.get(field.name)
        if routes is None:
            problems.append(f"{where}: V0 field '{field.name}' has no counterpart in the "
                            f"current format; dropped")
            continue
        target = routes.get(v0.type) or routes.get(_ANY_TYPE)
        if target is None:
            problems.append(f"{where}: V0 field '{field.name}' does not apply to a layer of "
                            f"type '{v0.type}'; dropped")
            continue
        param_name, target_field = target
        param = getattr(v1, param_name)
        if target_field:
            _set_field(param, target_field, value)
        else:
            param.CopyFrom(value)  # whole sub-message (hdf5_output_param)
    return v1


# ---------------------------------------------------------------------------------------------
# Step 2: data-layer preprocessing settings -> transform_param (spec §2.1)
# ---------------------------------------------------------------------------------------------

_DATA_LAYER_PARAMS = {
    _V1_LAYER_TYPE.Value("DATA"): "data_param",
    _V1_LAYER_TYPE.Value("IMAGE_DATA"): "image_data_param",
    _V1_LAYER_TYPE.Value("WINDOW_DATA"): "window_data_param",
}
_MOVED_TO_TRANSFORM_PARAM = ("scale", "mean_file", "crop_size", "mirror")


def _move_data_settings_to_transform_param(net):
    for layer in net.layers:
        param_name = _DATA_LAYER_PARAMS.get(layer.type)
        if param_name is None or not layer.HasField(param_name):
            continue
        param = getattr(layer, param_name)
        for field_name in _MOVED_TO_TRANSFORM_PARAM:
            if param.HasField(field_name):
                setattr(layer.transform_param, field_name, getattr(param, field_name))
                param.ClearField(field_name)


# ---------------------------------------------------------------------------------------------
# Step 3: V1 -> V2 (spec §2.3)
# ---------------------------------------------------------------------------------------------

_V1_COPIED_FIELDS = ("bottom", "top", "name", "include", "exclude", "blobs", "loss_weight")
# V1 per-blob lists -> field of ParamSpec i.
_V1_PARAM_SPEC_FIELDS = {"param": "name", "blob_share_mode": "share_mode",
                         "blobs_lr": "lr_mult", "weight_decay": "decay_mult"}


def _upgrade_v1_net(net, source, problems):
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net)
    upgraded.ClearField("layers")
    for index, v1 in enumerate(net.layers):
        upgraded.layer.add().CopyFrom(_upgrade_v1_layer(v1, index, source, problems))
    return upgraded


def _upgrade_v1_layer(v1, index, source, problems):
    layer = caffe_pb2.LayerParameter()
    layer_fields = layer.DESCRIPTOR.fields_by_name
    for field, value in v1.ListFields():
        if field.name in _V1_COPIED_FIELDS:
            _copy_field(layer, field.name, value)
        elif field.name == "type":
            layer.type = v1_type_name(value)
        elif field.name in _V1_PARAM_SPEC_FIELDS:
            spec_field = _V1_PARAM_SPEC_FIELDS[field.name]
            for i, item in enumerate(value):
                while len(layer.param) <= i:
                    layer.param.add()
                # share_mode: V1 and ParamSpec DimCheckMode share their numbering.
                setattr(layer.param[i], spec_field, item)
        elif (field.message_type is not None and field.name in layer_fields
              and layer_fields[field.name].message_type is field.message_type):
            # *_param, transform_param, loss_param: identical message types.
            getattr(layer, field.name).CopyFrom(value)
        else:
            # Only the nested V0 `layer` gets here; step 1 has converted those already.
            problems.append(f"{source}: {_describe_layer(v1.name, index)}: V1 field "
                            f"'{field.name}' has no counterpart in the current format; dropped")
    return layer


# ---------------------------------------------------------------------------------------------
# Step 5: BatchNorm statistics are not learned (spec §2.1)
# ---------------------------------------------------------------------------------------------


def _freeze_batch_norm_statistics(net):
    # Old BatchNorm definitions declared three `param` entries to stop the solver from
    # training mean/variance/factor; Caffe forces that meaning.
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0
