"""Thread count: environment variable, API call, and the same numbers with 1 or 2 threads."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffelrp
from netutil import layer, make_net, randomize


def test_environment_variable_sets_the_default():
    code = "import caffelrp; print(caffelrp.get_num_threads())"
    env = dict(os.environ, CAFFELRP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1", out.stderr


def test_set_num_threads_rejects_non_positive_counts():
    with pytest.raises(ValueError, match="positive integer"):
        caffelrp.set_num_threads(0)


def test_forward_is_the_same_with_one_and_two_threads(tmp_path):
    body = (layer("conv", "Convolution", params="convolution_param { num_output: 16 kernel_size: 3 }")
            + layer("pool", "Pooling", bottom="conv", params="pooling_param { pool: MAX kernel_size: 2 "
                                                            "stride: 2 }")
            + layer("fc", "InnerProduct", bottom="pool", params="inner_product_param { num_output: 300 }"))
    net = make_net(tmp_path, body, (2, 3, 70, 70))
    randomize(net, seed=3)
    x = np.random.default_rng(4).standard_normal((2, 3, 70, 70)).astype(np.float32)
    before = caffelrp.get_num_threads()
    try:
        caffelrp.set_num_threads(1)
        one = net.forward(x)["fc"].copy()
        caffelrp.set_num_threads(2)
        two = net.forward(x)["fc"].copy()
    finally:
        caffelrp.set_num_threads(before)
    # sgemm blocks may sum in a different order per thread count: float32 rounding only
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5 * np.abs(one).max())
