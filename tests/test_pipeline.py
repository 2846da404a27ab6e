"""explain's pipeline (caffelrp/pipeline.py): the writer thread behind the compute, the
preprocessing ahead of it, and the command's OpenMP wait policy."""
import dataclasses
import json
import sys
import threading

import pytest

from caffelrp import cli, threads
from caffelrp.pipeline import OutputWriter, Prefetch

from test_cli_explain import explain, make_image, model  # noqa: F401  (model: a fixture)

WAIT = 10.0     # s; only reached when the behaviour under test is broken (a hang)


# ------------------------------------------------------------------------------ the writer
def test_writer_runs_every_job_once_in_submission_order():
    done = []
    writer = OutputWriter(depth=3)
    for i in range(50):
        writer.submit(lambda i=i: done.append(i), "job %d" % i)
    writer.close()
    assert done == list(range(50))


def test_writer_runs_jobs_on_its_own_thread():
    where = []
    with OutputWriter() as writer:
        writer.submit(lambda: where.append(threading.current_thread().name))
    assert where == ["caffelrp-writer"]


def test_an_unexpected_error_in_a_job_is_raised_in_the_main_thread_naming_the_image():
    done = []

    def broken():
        raise RuntimeError("disk on fire")
    writer = OutputWriter()
    writer.submit(broken, "photos/cat.jpg")
    writer.submit(lambda: done.append(1), "photos/dog.jpg")
    with pytest.raises(RuntimeError, match="disk on fire") as info:
        writer.close()
    assert any("photos/cat.jpg" in note for note in info.value.__notes__)
    assert done == []                   # nothing runs after a failed job


def test_an_error_surfaces_at_the_next_submit():
    writer = OutputWriter()
    failed = threading.Event()

    def broken():
        failed.set()
        raise ValueError("bad")
    writer.submit(broken, "a.png")
    assert failed.wait(WAIT)
    writer._thread.join(0.05)          # let the writer record the error
    with pytest.raises(ValueError, match="bad"):
        for _ in range(1000):           # the error is recorded right after the job returns
            writer.submit(lambda: None, "b.png")
    writer.cancel()


def test_submit_waits_while_the_queue_is_full():
    release = threading.Event()
    writer = OutputWriter(depth=2)
    writer.submit(release.wait)         # running, blocked
    writer.submit(lambda: None)
    writer.submit(lambda: None)         # the queue now holds 2
    submitted = threading.Event()
    helper = threading.Thread(target=lambda: (writer.submit(lambda: None), submitted.set()))
    helper.start()
    assert not submitted.wait(0.3)      # blocked: the queue is bounded
    release.set()
    assert submitted.wait(WAIT)
    helper.join(WAIT)
    writer.close()


def test_cancel_drops_pending_jobs_and_waits_for_the_running_one():
    started, release = threading.Event(), threading.Event()
    done = []

    def running():
        started.set()
        release.wait(WAIT)
        done.append("running")
    writer = OutputWriter(depth=8)
    writer.submit(running)
    for i in range(5):
        writer.submit(lambda i=i: done.append(i))
    assert started.wait(WAIT)
    threading.Timer(0.1, release.set).start()
    writer.cancel()
    assert done == ["running"]          # finished, not cut off; the queued five never ran
    assert not writer._thread.is_alive()


def test_prefetch_yields_every_item_in_order_prepared_on_a_helper_on_one_kernel_thread():
    seen = []

    def prepare(item):
        seen.append((threading.current_thread().name, threads.threads_for(10 ** 9)))
        return item * 10
    with Prefetch(range(5), prepare) as prefetch:
        assert list(prefetch) == [(i, i * 10) for i in range(5)]
    assert all(name.startswith("caffelrp-prefetch") and n == 1 for name, n in seen)


def _own_nice():
    import os
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are "
                    "Linux's; elsewhere the helpers keep the default priority")
def test_the_helpers_run_at_a_lower_priority_and_the_main_thread_keeps_its_own():
    from caffelrp.pipeline import BACKGROUND_NICE
    main = _own_nice()
    seen = {}
    with OutputWriter() as writer:
        writer.submit(lambda: seen.setdefault("writer", _own_nice()))
    with Prefetch([0], lambda item: seen.setdefault("prefetch", _own_nice())) as prefetch:
        list(prefetch)
    assert _own_nice() == main
    expected = min(19, main + BACKGROUND_NICE)
    assert BACKGROUND_NICE > 0 and seen == {"writer": expected, "prefetch": expected}


def test_limited_applies_to_the_calling_thread_only():
    n = threads.get_num_threads()
    other = []
    with threads.limited(1):
        assert threads.threads_for(10 ** 9) == 1
        t = threading.Thread(target=lambda: other.append(threads.threads_for(10 ** 9)))
        t.start()
        t.join()
    assert other == [n] and threads.threads_for(10 ** 9) == n


# ------------------------------------------------------------------- the command's writer
def _images(tmp_path, n):
    return [make_image(tmp_path / ("im%d.png" % i), seed=i) for i in range(n)]


def test_a_write_error_names_the_image_leaves_no_partial_file_and_the_others_are_done(
        tmp_path, model, monkeypatch, capsys):   # noqa: F811
    images = _images(tmp_path, 5)
    real = cli.write_png

    def failing(path, rgb):
        if "im2_overlay" in str(path):
            real(path, rgb)                     # a complete file first ...
            raise OSError(28, "No space left on device")
        return real(path, rgb)
    monkeypatch.setattr(cli, "write_png", failing)
    out = tmp_path / "out"
    assert explain(model, *images, "--batch-size", "2", out=out) == 1
    err = capsys.readouterr().err
    assert "im2.png: cannot write the outputs" in err and "No space left" in err
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")]        # no temporary file
    assert "im2.json" not in names                             # ... but no sidecar: redone
    assert [n for n in names if n.endswith(".json")] == ["im%d.json" % i for i in (0, 1, 3, 4)]


def test_write_errors_are_listed_in_image_order(tmp_path, model, monkeypatch, capsys):  # noqa
    images = _images(tmp_path, 6)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    images.insert(3, bad)            # a read failure (on the prefetch thread) between the two
    real = cli.write_png

    def failing(path, rgb):
        if "im1_heat" in str(path) or "im4_heat" in str(path):
            raise OSError(13, "Permission denied")
        return real(path, rgb)
    monkeypatch.setattr(cli, "write_png", failing)
    assert explain(model, *images, "--batch-size", "2", out=tmp_path / "out") == 1
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error:")]
    assert len(errors) == 3
    assert "im1.png" in errors[0] and "bad.png" in errors[1] and "im4.png" in errors[2]


def test_an_unexpected_error_in_the_writer_reaches_the_caller_naming_the_image(
        tmp_path, model, monkeypatch):   # noqa: F811
    images = _images(tmp_path, 3)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the writer")
    monkeypatch.setattr(cli, "write_explanation", broken)
    with pytest.raises(RuntimeError, match="a bug in the writer") as info:
        explain(model, *images, out=tmp_path / "out")
    assert any("im0.png" in note for note in info.value.__notes__)


def test_ctrl_c_during_the_compute_stops_the_writer_cleanly(tmp_path, model, monkeypatch,
                                                             capsys):   # noqa: F811
    images = _images(tmp_path, 6)
    real_method = cli.METHODS["lrp"]
    real = real_method.run
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:          # the second batch: the first one's files are queued
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setitem(cli.METHODS, "lrp", dataclasses.replace(real_method, run=interrupted))
    out = tmp_path / "out"
    assert explain(model, *images, "--batch-size", "3", out=out) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")]
    sidecars = [n for n in names if n.endswith(".json")]
    # what is reported done is what has a sidecar, and every image with a sidecar is complete
    assert err.strip().splitlines()[-1] == (
        "interrupted: %d done, %d left (use --resume)" % (len(sidecars), 6 - len(sidecars)))
    for name in sidecars:
        stem = name[:-len(".json")]
        assert {stem + s for s in ("_relevance.npy", "_heatmap.png", "_overlay.png")} <= set(
            names)


def test_the_writer_thread_writes_the_same_bytes_as_writing_inline(tmp_path, model):  # noqa
    images = _images(tmp_path, 4)
    out = tmp_path / "threaded"
    assert explain(model, *images, "--batch-size", "3", out=out) == 0
    # the Dask task's path: explain_batch without a writer, every file written before it returns
    proto, weights = model
    args = cli.build_parser().parse_args(
        ["explain", *map(str, images), "--model", str(proto), "--weights", str(weights),
         "--out", str(tmp_path / "inline"), "--batch-size", "3"])
    opened = cli.open_model(args)
    inline = tmp_path / "inline"
    inline.mkdir()
    run = json.loads((out / "im0.json").read_text())
    run = {"method": "lrp", "parameters": run["parameters"], "target": run["target"],
           "model": run["model"], "identity": run["run"], "class_names": None}
    report = cli.Report(quiet=True)
    items = [(str(p), p.stem) for p in images]
    for start in (0, 3):
        cli.explain_batch(opened.net, cli.METHODS["lrp"], items[start:start + 3], "top5", args,
                          run, inline, (opened.in_h, opened.in_w, opened.base, opened.mean),
                          report, cli.Progress(0, quiet=True), [])
    assert report.done == 4 and not report.failures
    for p in sorted(out.iterdir()):
        if p.suffix in (".npy", ".png"):
            assert p.read_bytes() == (inline / p.name).read_bytes(), p.name


# ---------------------------------------------------------------- the OpenMP wait policy
def test_the_command_makes_openmp_threads_passive_unless_the_user_chose():
    env = {}
    assert threads.passive_wait_for_the_command(["-m"], env) and env == {
        "OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "active"}
    assert not threads.passive_wait_for_the_command(["-m"], env)
    assert env == {"OMP_WAIT_POLICY": "active"}


def test_the_library_leaves_the_wait_policy_alone():
    env = {}
    assert not threads.passive_wait_for_the_command(["script.py"], env) and env == {}
    assert not threads.passive_wait_for_the_command([], env) and env == {}

