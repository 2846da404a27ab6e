"""Helpers for tests that build small networks from prototxt text."""
import numpy as np

import caffelrp


def prototxt(body, input_shape=(2, 3, 9, 9), name="test"):
    dims = " ".join("dim: %d" % d for d in input_shape)
    return 'name: "%s"\ninput: "data"\ninput_shape { %s }\n%s' % (name, dims, body)


def make_net(tmp_path, body, input_shape=(2, 3, 9, 9), filename="net.prototxt"):
    path = tmp_path / filename
    path.write_text(prototxt(body, input_shape))
    # the tests set the weights they need (randomize, net.params) or run Caffe's defaults on
    # purpose
    return caffelrp.Net(str(path), allow_missing_weights=True)


def randomize(net, seed=0, scale=1.0):
    """Fill every weight blob with seeded normal values (in place); returns them as float64."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for b in blobs:
            b[...] = rng.standard_normal(b.shape) * scale
    return {name: [b.astype(np.float64) for b in blobs] for name, blobs in net.params.items()}


def layer(name, type_, bottom="data", top=None, params=""):
    bottoms = bottom if isinstance(bottom, (list, tuple)) else [bottom]
    tops = top if isinstance(top, (list, tuple)) else [top or name]
    lines = ['layer {', '  name: "%s"' % name, '  type: "%s"' % type_]
    lines += ['  bottom: "%s"' % b for b in bottoms]
    lines += ['  top: "%s"' % t for t in tops]
    if params:
        lines.append("  " + params)
    lines.append("}")
    return "\n".join(lines) + "\n"


def he_normal(net, seed):
    """He-normal weights, small biases, BatchNorm with positive variances (scale factor 1)."""
    rng = np.random.default_rng(seed)
    for i, (name, kind) in enumerate(net.layers):
        blobs = net.params.get(name)
        if not blobs:
            continue
        if kind == "BatchNorm":
            blobs[0][...] = rng.standard_normal(blobs[0].shape) * 0.2
            blobs[1][...] = rng.uniform(0.5, 2.0, blobs[1].shape)
            blobs[2][...] = 1.0
        elif kind == "Scale":
            blobs[0][...] = rng.uniform(0.5, 1.5, blobs[0].shape)
            if len(blobs) > 1:
                blobs[1][...] = rng.standard_normal(blobs[1].shape) * 0.1
        else:
            fan_in = int(np.prod(blobs[0].shape[1:]))
            blobs[0][...] = rng.standard_normal(blobs[0].shape) * np.sqrt(2.0 / fan_in)
            if len(blobs) > 1:
                blobs[1][...] = rng.standard_normal(blobs[1].shape) * 0.05


def resnet50_body(widths=(4, 8), blocks=(2, 2), classes=10):
    """A ResNet-50-shaped prototxt body (names as in Kaiming He's deploy files)."""
    def conv_bn(name, bottom, n, k, stride=1, pad=0, relu=True):
        text = layer(name, "Convolution", bottom, name,
                     "convolution_param { num_output: %d kernel_size: %d stride: %d pad: %d "
                     "bias_term: false }" % (n, k, stride, pad))
        text += layer("bn_" + name, "BatchNorm", name, name,
                      "batch_norm_param { use_global_stats: true }")
        text += layer("scale_" + name, "Scale", name, name, "scale_param { bias_term: true }")
        if relu:
            text += layer(name + "_relu", "ReLU", name, name)
        return text

    body = conv_bn("conv1", "data", 4, 7, stride=2, pad=3)
    body += layer("pool1", "Pooling", "conv1", "pool1",
                  "pooling_param { pool: MAX kernel_size: 3 stride: 2 }")
    bottom, channels = "pool1", 4
    for stage, (width, count) in enumerate(zip(widths, blocks), 2):
        for b in range(count):
            name = "res%d%s" % (stage, "abcdef"[b])
            stride = 2 if (b == 0 and stage > 2) else 1
            if b == 0:
                body += conv_bn(name + "_branch1", bottom, 4 * width, 1, stride, relu=False)
                shortcut = name + "_branch1"
            else:
                shortcut = bottom
            body += conv_bn(name + "_branch2a", bottom, width, 1, stride)
            body += conv_bn(name + "_branch2b", name + "_branch2a", width, 3, 1, 1)
            body += conv_bn(name + "_branch2c", name + "_branch2b", 4 * width, 1, relu=False)
            body += layer(name, "Eltwise", [shortcut, name + "_branch2c"], name)
            body += layer(name + "_relu", "ReLU", name, name)
            bottom, channels = name, 4 * width
    body += layer("pool5", "Pooling", bottom, "pool5",
                  "pooling_param { pool: AVE global_pooling: true }")
    body += layer("fc", "InnerProduct", "pool5", "fc",
                  "inner_product_param { num_output: %d }" % classes)
    body += layer("prob", "Softmax", "fc", "prob")
    return body
