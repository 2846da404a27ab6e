"""The passes' allocator (src/arena.pyx, caffelrp.scratch.reusing): freed large blocks are kept
and handed out again; zeroed, resized and cross-thread arrays stay correct; a pass gives the same
bits with and without it."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from caffelrp import scratch
from caffelrp.kernels import arena

from netutil import layer, make_net, randomize

BIG = 3 << 20   # bytes: above the 1 MB below which blocks go back to malloc


@pytest.fixture
def kept_blocks():
    """A clean cache with room, restored afterwards."""
    limit = scratch.arena_limit()
    scratch.set_arena_limit(256 << 20)
    arena.release()
    yield
    arena.release()
    scratch.set_arena_limit(limit)


def test_a_freed_block_is_reused_for_the_same_size(kept_blocks):
    with scratch.reusing():
        a = np.empty(BIG // 4, np.float32)
        address = a.__array_interface__["data"][0]
        del a
        blocks, cached = arena.stats()[:2]
        assert blocks == 1 and cached >= BIG
        hits = arena.stats()[3]
        b = np.empty(BIG // 4, np.float32)
        assert b.__array_interface__["data"][0] == address
        assert arena.stats()[3] == hits + 1
        # a request more than an eighth smaller does not take it (it would waste the block)
        del b
        c = np.empty(BIG // 8, np.float32)
        assert c.__array_interface__["data"][0] != address
        assert arena.stats()[0] == 1


def test_zeros_and_resize_and_arrays_that_outlive_the_context(kept_blocks):
    with scratch.reusing():
        junk = np.full(BIG // 4, 7.0, np.float32)
        del junk                                  # a cached block full of 7s
        z = np.zeros(BIG // 4, np.float32)        # calloc: never a dirty cached block
        assert not z.any()
        r = np.arange(1000, dtype=np.int64)
        r.resize(BIG // 8, refcheck=False)        # realloc from a small block to a large one
        kept = np.ones(BIG // 4, np.float32)
    assert (r[:1000] == np.arange(1000)).all() and not r[1000:].any()
    assert kept.sum() == BIG // 4                 # valid after the context ...
    del kept                                      # ... and freed through the arena
    assert arena.stats()[0] >= 1


def test_blocks_freed_in_another_thread(kept_blocks):
    with scratch.reusing():
        arrays = [np.full(BIG // 4, i, np.float32) for i in range(4)]
    sums = []
    def consume():
        while arrays:
            a = arrays.pop()
            sums.append(float(a[0]))
            del a
    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sums) == [0.0, 1.0, 2.0, 3.0]
    assert arena.stats()[0] == 4


def test_the_limit_bounds_what_is_kept(kept_blocks):
    scratch.set_arena_limit(BIG + 1024)
    with scratch.reusing():
        a, b = np.empty(BIG // 4, np.float32), np.empty(BIG // 4, np.float32)
        del a, b
    assert arena.stats()[0] == 1 and arena.stats()[1] <= BIG + 1024
    scratch.set_arena_limit(0)
    assert arena.stats()[:2] == (0, 0)
    with pytest.raises(scratch.ArenaSettingError):
        scratch.set_arena_limit(-1)


def test_a_forward_pass_is_the_same_with_and_without_reuse(kept_blocks, tmp_path):
    body = (layer("conv", "Convolution", "data", "conv",
                  "convolution_param { num_output: 16 kernel_size: 3 pad: 1 }")
            + layer("relu", "ReLU", "conv", "conv")
            + layer("fc", "InnerProduct", "conv", "fc", "inner_product_param { num_output: 5 }"))
    net = make_net(tmp_path, body, (4, 3, 64, 64))
    randomize(net, seed=3)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    scratch.set_arena_limit(0)
    want = net.forward(x)["fc"].copy()
    scratch.set_arena_limit(256 << 20)
    first = net.forward(x)["fc"].copy()
    hits = arena.stats()[3]
    again = net.forward(x)["fc"]
    assert arena.stats()[3] > hits                # the second pass took the first's blocks
    np.testing.assert_array_equal(first, want)
    np.testing.assert_array_equal(again, want)


def test_a_bad_limit_in_the_environment_is_a_clear_error():
    code = ("from caffelrp import scratch\n"
            "try:\n    scratch.arena_limit()\nexcept scratch.ArenaSettingError as e:\n"
            "    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "CAFFELRP_ARENA_BYTES": "lots"})
    assert "ERR CAFFELRP_ARENA_BYTES must be a number of bytes" in out.stdout, out.stderr


def test_tracemalloc_sees_the_arrays(kept_blocks):
    import tracemalloc
    tracemalloc.start()
    try:
        with scratch.reusing():
            before = tracemalloc.get_traced_memory()[0]
            a = np.empty(BIG, np.uint8)
            assert tracemalloc.get_traced_memory()[0] - before >= BIG
            del a
            assert tracemalloc.get_traced_memory()[0] - before < BIG
    finally:
        tracemalloc.stop()
