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
