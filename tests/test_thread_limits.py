"""Thread counts: bad CAFFELRP_NUM_THREADS values fail at first use with a clear error, huge
counts are clamped, and the OpenBLAS pools are set through threadpoolctl."""
import os
import subprocess
import sys

import pytest

import caffelrp
from caffelrp.threads import ThreadCountError, max_threads


@pytest.mark.parametrize("value", ["abc", "0", "2.5", "-3"])
def test_bad_environment_value_is_an_error_at_first_use_not_at_import(value):
    code = "import caffelrp; print('imported', flush=True); caffelrp.get_num_threads()"
    env = dict(os.environ, CAFFELRP_NUM_THREADS=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "imported"
    assert out.returncode != 0
    assert "ThreadCountError" in out.stderr and "CAFFELRP_NUM_THREADS" in out.stderr
    assert repr(value) in out.stderr


def test_huge_environment_value_is_clamped_with_a_warning():
    code = "import caffelrp; print(caffelrp.get_num_threads())"
    env = dict(os.environ, CAFFELRP_NUM_THREADS="100000")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 4 * (os.cpu_count() or 1)
    assert "more than 4 per core" in out.stderr


def test_set_num_threads_clamps_and_rejects():
    before = caffelrp.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match="per core"):
            caffelrp.set_num_threads(100000)
        assert caffelrp.get_num_threads() == max_threads()
    finally:
        caffelrp.set_num_threads(before)
    for bad in (0, -1, 2.5, "2", True):
        with pytest.raises(ThreadCountError):
            caffelrp.set_num_threads(bad)


def test_threadpoolctl_sees_the_gemm_blas_single_threaded_and_numpys_at_the_count():
    from threadpoolctl import threadpool_info
    before = caffelrp.get_num_threads()
    try:
        caffelrp.set_num_threads(3)
        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        gemm = [i for i in blas if "scipy" in i["filepath"] and "numpy" not in i["filepath"]]
        others = [i for i in blas if i not in gemm]
        assert gemm and all(i["num_threads"] == 1 for i in gemm)
        assert all(i["num_threads"] == 3 for i in others)
    finally:
        caffelrp.set_num_threads(before)
