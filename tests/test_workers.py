"""explain's worker processes (caffelrp/workers.py, ``--workers``): the same files as one
process, errors and interruptions reported as the one-process pipeline reports them, a worker's
death named, and the automatic count."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caffelrp import cli, workers

from test_cli_explain import explain, make_image, model  # noqa: F401  (model: a fixture)

WAIT = 60.0     # s; only reached when the behaviour under test is broken (a hang)

pytestmark = pytest.mark.skipif(not workers.can_fork(), reason="worker processes need fork "
                                                               "(Linux)")


def _images(folder, n):
    folder.mkdir(exist_ok=True)
    return [make_image(folder / ("im%02d.png" % i), seed=i) for i in range(n)]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


# --------------------------------------------------------------------- through the command
def test_workers_write_the_same_files_as_one_process(tmp_path, model, capsys):  # noqa: F811
    images = _images(tmp_path / "photos", 9)
    assert explain(model, tmp_path / "photos", "--batch-size", "2", "--workers", "1",
                   out=tmp_path / "one") == 0
    assert explain(model, tmp_path / "photos", "--batch-size", "2", "--workers", "3",
                   out=tmp_path / "three") == 0
    one, three = _files(tmp_path / "one"), _files(tmp_path / "three")
    assert len(one) == 4 * len(images)
    assert one.keys() == three.keys()
    for name in one:   # the sidecars too: nothing in them depends on the process
        assert one[name] == three[name], name
    assert "explained 9 images" in capsys.readouterr().out


def test_a_failed_image_in_a_worker_is_listed_and_the_others_are_done(tmp_path, model,  # noqa
                                                                         capsys):
    _images(tmp_path / "photos", 7)
    (tmp_path / "photos" / "im03.png").write_bytes(b"not a picture")
    out = tmp_path / "out"
    assert explain(model, tmp_path / "photos", "--batch-size", "2", "--workers", "2",
                   out=out) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "im03.png" in errors[0]
    assert "explained 6 images" in captured.out and "1 failed" in captured.out
    sidecars = sorted(p.name for p in out.glob("*.json"))
    assert sidecars == ["im%02d.json" % i for i in range(7) if i != 3]


def test_failures_from_several_workers_are_listed_in_image_order(tmp_path, model,  # noqa
                                                                  capsys):
    _images(tmp_path / "photos", 12)
    for i in (1, 6, 10):
        (tmp_path / "photos" / ("im%02d.png" % i)).write_bytes(b"broken")
    assert explain(model, tmp_path / "photos", "--batch-size", "1", "--workers", "3",
                   out=tmp_path / "out") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert [e.split("im")[1][:2] for e in errors] == ["01", "06", "10"]


def test_shared_scale_needs_one_process_or_a_fixed_scale(tmp_path, model, capsys):  # noqa
    _images(tmp_path / "photos", 4)
    assert explain(model, tmp_path / "photos", "--batch-size", "1", "--workers", "2",
                   "--shared-scale", out=tmp_path / "out") == 2
    assert "--shared-scale needs every image's relevance in one process" in \
        capsys.readouterr().err
    # auto falls back to one process for it
    assert explain(model, tmp_path / "photos", "--batch-size", "1", "--shared-scale",
                   out=tmp_path / "out") == 0


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_worker_count_is_a_usage_error(tmp_path, model, capsys, value):  # noqa: F811
    _images(tmp_path / "photos", 2)
    assert explain(model, tmp_path / "photos", "--workers", value, out=tmp_path / "out") == 2
    assert "--workers takes a number of processes >= 1 or auto, got %r" % value in \
        capsys.readouterr().err


def _args(*extra):
    return cli.build_parser().parse_args(["explain", "x.png", "--model", "m.prototxt", "--out",
                                          "o", *extra])


class _Net:
    blob_shapes = {"data": (1, 3, 10, 10), "out": (1, 5)}


def test_auto_uses_one_worker_per_thread_when_there_are_batches_enough(monkeypatch):
    monkeypatch.setattr(cli, "get_num_threads", lambda: 2)
    monkeypatch.setattr(workers, "available_memory", lambda: 1 << 40)
    assert cli.explain_worker_count(_args(), _Net(), 4) == 2
    assert cli.explain_worker_count(_args(), _Net(), 3) == 1      # fewer than 2 per worker
    assert cli.explain_worker_count(_args("--workers", "1"), _Net(), 50) == 1
    assert cli.explain_worker_count(_args("--workers", "4"), _Net(), 50) == 4
    assert cli.explain_worker_count(_args("--workers", "4"), _Net(), 1) == 1
    monkeypatch.setattr(cli, "get_num_threads", lambda: 1)
    assert cli.explain_worker_count(_args(), _Net(), 50) == 1     # --threads 1: one process


def test_caffe_exact_mode_keeps_one_process_unless_one_thread_is_asked(monkeypatch):
    from caffelrp import caffe_blas
    monkeypatch.setattr(caffe_blas, "active", lambda: True)
    monkeypatch.setattr(workers, "available_memory", lambda: 1 << 40)
    monkeypatch.setattr(cli, "get_num_threads", lambda: 2)
    assert cli.explain_worker_count(_args(), _Net(), 50) == 1
    with pytest.raises(cli.UsageError, match="rounds its products by its thread count"):
        cli.explain_worker_count(_args("--workers", "2"), _Net(), 50)
    monkeypatch.setattr(cli, "get_num_threads", lambda: 1)   # --threads 1: the same bits
    assert cli.explain_worker_count(_args("--workers", "2"), _Net(), 50) == 2


def test_auto_keeps_to_the_available_memory():
    per_worker = 3 << 30
    # 0.75 of 10 GiB holds two 3 GiB workers, not four
    assert workers.auto_count(4, 100, per_worker, available=10 << 30) == 2
    assert workers.auto_count(4, 100, per_worker, available=1 << 30) == 1
    assert workers.auto_count(4, 3, 1, available=1 << 40) == 3
    # the estimate: 24 bytes per blob element of one image, times the batch
    assert workers.worker_memory(_Net(), 8) == 24 * (300 + 5) * 8


# ------------------------------------------------------------------------- the pool itself
def _collect(pool, tmp_path):
    results, starts = {}, []
    pool.start().collect(starts.append, lambda i, done, failures: results.__setitem__(
        i, (done, failures)), lambda i: "batch %d" % i, [tmp_path])
    return results, starts


def test_every_batch_runs_once_across_the_workers(tmp_path):
    pids = {}

    def work(index):
        return index, ["%d in %d" % (index, os.getpid())]
    results, starts = _collect(workers.Workers(3, 20, work), tmp_path)
    assert sorted(starts) == list(range(20)) and sorted(results) == list(range(20))
    for index, (done, failures) in results.items():
        assert done == index
        pids.setdefault(failures[0].split(" in ")[1], []).append(index)
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 3


def test_a_worker_that_dies_is_named_with_its_images_and_the_signal(tmp_path):
    def work(index):
        if index == 2:    # killed while writing: its temporary file is left behind
            (tmp_path / ".caffelrp-0badf00d.tmp").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        return 1, []
    start = time.monotonic()
    with pytest.raises(workers.WorkerError) as info:
        _collect(workers.Workers(2, 6, work), tmp_path)
    message = str(info.value)
    assert "while explaining batch 2 was killed by SIGKILL" in message
    assert "--resume" in message
    assert time.monotonic() - start < WAIT
    assert list(tmp_path.iterdir()) == []          # ... and removed


def test_a_worker_stopped_from_outside_stops_the_run_saying_so(tmp_path):
    def work(index):
        if index == 3:
            os.kill(os.getpid(), signal.SIGTERM)     # someone's ``kill`` of one worker
            time.sleep(WAIT)
        return 1, []
    with pytest.raises(workers.WorkerError, match="while explaining batch 3 was stopped by a "
                                                  r"signal \(SIGINT or SIGTERM\)"):
        _collect(workers.Workers(2, 8, work), tmp_path)


def test_a_worker_that_raises_reports_its_traceback(tmp_path):
    def work(index):
        if index == 1:
            raise ZeroDivisionError("the kernel divided by nothing")
        return 1, []
    with pytest.raises(workers.WorkerError) as info:
        _collect(workers.Workers(2, 4, work), tmp_path)
    message = str(info.value)
    assert "while explaining batch 1 raised an unexpected error" in message
    assert "ZeroDivisionError: the kernel divided by nothing" in message


def test_an_interrupt_in_the_parent_stops_every_worker(tmp_path):
    def work(index):
        time.sleep(0.2)
        return 1, []
    pool = workers.Workers(2, 1000, work).start()
    seen = []

    def on_result(index, done, failures):
        seen.append(index)
        if len(seen) == 3:
            raise KeyboardInterrupt
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.collect(lambda index: None, on_result, str, [tmp_path])
    assert time.monotonic() - start < WAIT
    assert all(not w.process.is_alive() for w in pool.workers)
    assert len(seen) < 20          # stopped, not run to the end


def _command(model, folder, out, *extra):  # noqa: F811
    proto, weights = model
    return [sys.executable, "-m", "caffelrp", "explain", str(folder), "--model", str(proto),
            "--weights", str(weights), "--out", str(out), "--batch-size", "1", *extra]


@pytest.mark.parametrize("whom", ["group", "parent"])
def test_ctrl_c_leaves_complete_outputs_only(tmp_path, model, whom):  # noqa: F811
    """Ctrl-C (SIGINT to the terminal's process group) or SIGINT to the command alone: the
    command ends with 130 and says how many are done; every image with a sidecar has all its
    files, and no temporary file is left."""
    _images(tmp_path / "photos", 400)
    out = tmp_path / "out"
    process = subprocess.Popen(_command(model, tmp_path / "photos", out, "--workers", "2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + WAIT
    while not (out.is_dir() and len(list(out.glob("*.json"))) >= 4):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    if whom == "group":
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if n.startswith(".")]
    sidecars = [n for n in names if n.endswith(".json")]
    assert 4 <= len(sidecars) < 400
    for name in sidecars:
        stem = name[:-len(".json")]
        assert {stem + s for s in ("_relevance.npy", "_heatmap.png", "_overlay.png")} <= names
    # the count is what the workers reported; an image whose sidecar was renamed in place just
    # before the signal, and not yet counted, may be complete too (at most one per worker)
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and last.endswith(" left (use --resume)")
    done, left = int(last.split()[1]), int(last.split()[3])
    assert done + left == 400 and len(sidecars) - 2 <= done <= len(sidecars)
