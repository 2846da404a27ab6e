"""One Net from two Python threads gives the results of sequential calls (issue 16)."""
import threading

import numpy as np

from netutil import layer, make_net, randomize

BODY = (layer("conv1", "Convolution", params="convolution_param { num_output: 16 kernel_size: 3 "
                                             "pad: 1 }")
        + layer("relu1", "ReLU", bottom="conv1", top="conv1")
        + layer("pool1", "Pooling", bottom="conv1",
                params="pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        + layer("conv2", "Convolution", bottom="pool1",
                params="convolution_param { num_output: 16 kernel_size: 3 pad: 1 }")
        + layer("relu2", "ReLU", bottom="conv2", top="conv2")
        + layer("fc", "InnerProduct", bottom="conv2", params="inner_product_param { "
                                                             "num_output: 5 }"))


def test_two_threads_on_one_net_match_sequential_results(tmp_path):
    net = make_net(tmp_path, BODY, input_shape=(4, 3, 32, 32))
    randomize(net, seed=3, scale=0.2)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(4, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    expected = [net.relevance(x, rule="epsilon", target=1) for x in inputs]
    wrong = []

    def work(k):
        for _ in range(15):
            r = net.relevance(inputs[k], rule="epsilon", target=1)
            if not np.array_equal(r, expected[k]):
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []   # the same arrays bit for bit: the passes ran one after the other
