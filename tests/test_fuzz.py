"""Fuzz tests (issue 16): mutated prototxts, caffemodels, mean files and images give only
CaffeLRPErrors (for mean files: --mean's usage error), never another exception, a crash, a hang
or NaN from a file that was accepted.

A fixed seed and a few thousand cases per target (caffelrp.fuzz; the longer run is
``python -m caffelrp.fuzz``, README "Fuzzing"). The cases run in child processes with
faulthandler, so a segfault is a failed test naming its case, not a dead pytest. The kernels'
own fuzz (random shapes, strides, geometry near 2^31) is in test_kernel_bounds.py.
"""
import ctypes
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import caffelrp
from caffelrp import fuzz
from caffelrp.errors import CaffeLRPError

SEED = 16
CASES = {"prototxt": 1500, "caffemodel": 2000, "mean": 1500, "image": 2000}
HERE = str(Path(__file__).resolve().parent)


def describe(findings):
    return "\n".join("%s case %d: %s %s %s\n%s" % (f["target"], f["case"], f["kind"], f["type"],
                                                   f["message"], f["traceback"][-1500:])
                     for f in findings[:5])


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_mutated_files_give_only_caffelrp_errors(target):
    done, findings = fuzz.run_isolated(target, SEED, 0, CASES[target], case_timeout=120)
    assert not findings, describe(findings)
    assert done == CASES[target]


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_the_seeds_are_accepted(target):
    # the mutations start from files that go all the way through (not from refused ones), and
    # the checks themselves pass on good files
    t = fuzz.make_target(target)
    with tempfile.TemporaryDirectory() as work:
        ctx = fuzz.Context(work)
        for i, seed in enumerate(t.seeds()):
            try:
                t.run(seed, ctx)
            except CaffeLRPError as e:
                # (explain refuses grayscale and alpha images; classify reads them)
                if not (target == "image" and ("grayscale" in str(e) or "alpha" in str(e))):
                    raise AssertionError("seed %d of %s refused: %s" % (i, target, e))


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_cases_are_a_function_of_seed_target_and_number(target):
    t = fuzz.make_target(target)
    a = [fuzz.make_case(t, SEED, i) for i in range(40, 60)]
    assert a == [fuzz.make_case(fuzz.make_target(target), SEED, i) for i in range(40, 60)]
    assert a != [fuzz.make_case(t, SEED + 1, i) for i in range(40, 60)]
    assert len(set(a)) > 15          # mutations, not copies of the seeds


def test_the_mutations_reach_past_the_parsers():
    # a fuzzer whose cases all die in the parser tests only the parser: enough prototxt cases
    # must build a net, enough caffemodel cases must load into one
    counts = {}
    previous = caffelrp.get_num_threads()
    caffelrp.set_num_threads(1)     # tiny nets: threads would only wait for each other
    try:
        for target in ("prototxt", "caffemodel"):
            t = fuzz.make_target(target)
            accepted = 0
            with tempfile.TemporaryDirectory() as work:
                ctx = fuzz.Context(work)
                for i in range(100, 250):
                    try:
                        t.run(fuzz.make_case(t, SEED, i), ctx)
                        accepted += 1
                    except CaffeLRPError:
                        pass
            counts[target] = accepted
    finally:
        caffelrp.set_num_threads(previous)
    assert counts["prototxt"] >= 25 and counts["caffemodel"] >= 15, counts


# -- the isolation: a crash, a hang and an exception are pinned to their cases -----------------
class MisbehavingTarget(fuzz.Target):
    """Case 0 fine, 1 segfaults, 2 hangs, 3 raises KeyError, 4 aborts; later cases are fine."""
    name = "misbehaving"

    def make_seeds(self):
        return [b"ok", b"segv", b"hang", b"keyerror", b"abort"]

    def mutate(self, data, rng, seeds):
        return b"ok"

    def run(self, data, ctx):
        if data == b"segv":
            ctypes.string_at(0)
        elif data == b"hang":
            time.sleep(600)
        elif data == b"keyerror":
            raise KeyError("boom")
        elif data == b"abort":
            os.abort()


def test_a_crash_or_a_hang_is_a_finding_of_its_case_and_the_run_goes_on():
    done, findings = fuzz.run_isolated("test_fuzz:MisbehavingTarget", 0, 0, 7, case_timeout=3,
                                       pythonpath=[HERE])
    assert done == 7
    got = {f["case"]: (f["kind"], f["type"]) for f in findings}
    assert got == {1: ("crash", "killed by SIGSEGV"), 2: ("hang", "timeout 3s"),
                   3: ("exception", "KeyError"), 4: ("crash", "killed by SIGABRT")}
    segv = next(f for f in findings if f["case"] == 1)
    assert "Segmentation fault" in segv["traceback"]     # faulthandler's report of the child


def fuzz_command(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "caffelrp.fuzz", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(Path(fuzz.__file__).parents[1])))


def test_the_command_line_runs_for_the_time_given_and_reports(tmp_path):
    started = time.monotonic()
    proc = fuzz_command("--target", "mean", "--seconds", "2", "--seed", "3", "--findings",
                        str(tmp_path / "findings"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - started < 60          # 2 s of cases plus a child's start-up
    line = next(x for x in proc.stdout.splitlines() if x.startswith("mean"))
    assert int(line.split()[1]) > 0 and "no findings" in proc.stdout
    assert not (tmp_path / "findings").exists()


def test_one_case_is_reproduced_in_process():
    proc = fuzz_command("--target", "caffemodel", "--seed", str(SEED), "--case", "7")
    assert proc.returncode == 0 and proc.stdout.startswith("fine: "), proc.stderr[-2000:]


@pytest.mark.slow
def test_the_atheris_engine_runs(tmp_path):
    pytest.importorskip("atheris")
    proc = fuzz_command("--engine", "atheris", "--target", "mean", "--cases", "300",
                        "--findings", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 300 runs" in proc.stderr and not list(tmp_path.glob("mean-crash-*"))


def test_findings_are_saved_with_their_inputs(tmp_path):
    _, findings = fuzz.run_isolated("test_fuzz:MisbehavingTarget", 0, 3, 4, pythonpath=[HERE])
    fuzz.save_findings(findings, tmp_path)
    saved = tmp_path / ("misbehaving-seed0-case3" + fuzz.Target.suffix)
    assert saved.read_bytes() == b"keyerror"
    assert '"type": "KeyError"' in (tmp_path / "findings.json").read_text()
