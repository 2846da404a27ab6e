"""``explain --dask``: the batches on a Dask LocalCluster of 2 worker processes give the same files
as a local run, survive a killed worker, resume, and an unreachable scheduler is a usage error."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Dask clusters start worker processes (about 20 s): `-m "not slow"` leaves it out
pytestmark = pytest.mark.slow

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
IMAGES = 12


def run(*argv, **kwargs):
    env = dict(os.environ, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s")
    return subprocess.run([sys.executable, "-m", "caffelrp", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300, **kwargs)


def explain(images, out, *extra, **kwargs):
    return run("explain", *images, "--model", "smallnet", "--out", out, "--batch-size", 2,
               "--threads", 1, *extra, **kwargs)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(IMAGES):
        rng = np.random.default_rng(i)
        path = folder / ("im%02d.png" % i)
        Image.fromarray(rng.integers(0, 256, (70 + i, 80, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """The files of a local run at one thread: what every cluster run must reproduce."""
    out = tmp_path_factory.mktemp("local")
    result = explain(images, out)
    assert result.returncode == 0, result.stderr
    return files_of(out)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def test_local_cluster_of_two_workers_writes_the_files_of_a_local_run(images, reference,
                                                                      tmp_path):
    result = explain(images, tmp_path / "o", "--dask", "local:2")
    assert result.returncode == 0, result.stderr
    assert "explained %d images" % IMAGES in result.stdout
    got = files_of(tmp_path / "o")
    assert sorted(got) == sorted(reference) and len(got) == 4 * IMAGES   # no temporary files
    for name in reference:
        assert got[name] == reference[name], name


def test_a_killed_worker_has_its_tasks_finished_elsewhere(images, reference, tmp_path):
    many = images * 4      # the same images under 4 folders' worth of stems: a longer run
    folder = tmp_path / "in"
    folder.mkdir()
    for k, image in enumerate(many):
        os.link(image, folder / ("%d_%s" % (k // IMAGES, image.name)))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        cmd = [sys.executable, "-m", "caffelrp", "explain", str(folder), "--model", "smallnet",
               # batches of 2 as the reference's: the same images in every GEMM call
               "--out", str(tmp_path / "o"), "--batch-size", "2", "--threads", "1",
               "--dask", cluster.scheduler_address]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys and w in pids]
            done = len(list((tmp_path / "o").glob("*.json"))) if (tmp_path / "o").is_dir() else 0
            if busy and done >= 2:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed = busy[0]
            time.sleep(0.005)
        out, err = proc.communicate(timeout=300)
    assert killed is not None, "the run ended before a worker could be killed"
    assert proc.returncode == 0, err
    got = files_of(tmp_path / "o")
    assert len(got) == 4 * len(many)          # every output, no temporary file left
    for name, data in got.items():
        stem_rest = name.split("_", 1)[1]     # the reference's file of the same image
        if name.endswith(".json"):
            continue                          # the sidecar names the image's path
        assert data == reference[stem_rest], name


def test_resume_across_runs_and_cluster_sizes(images, reference, tmp_path, cluster):
    out = tmp_path / "o"
    # 4 images first, so that the resumed run's batches of 2 hold the reference's pairs: the
    # products of a batch round by its row count (see README "Fidelity"), not by the cluster
    first = explain(images[:4], out, "--dask", "local:1")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = explain(images, out, "--resume", "--dask", cluster.scheduler_address)
    assert second.returncode == 0, second.stderr
    assert "explained %d images" % (IMAGES - 4) in second.stdout
    assert "4 already complete (skipped)" in second.stdout
    for name, mtime in before.items():        # not written again
        assert (out / name).stat().st_mtime_ns == mtime, name
    assert files_of(out) == reference


def test_an_unreachable_scheduler_is_a_usage_error(images, tmp_path):
    import socket
    with socket.socket() as s:        # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = explain(images[:1], tmp_path / "o", "--dask", "tcp://127.0.0.1:%d" % port)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "cannot reach the Dask scheduler tcp://127.0.0.1:%d" % port in result.stderr
    missing = explain(images[:1], tmp_path / "o", "--dask-scheduler-file", tmp_path / "none")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_a_failing_image_is_listed_and_the_others_go_on(images, tmp_path, cluster):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = explain([images[0], bad, images[1]], tmp_path / "o", "--dask",
                     cluster.scheduler_address)
    assert result.returncode == 1
    assert "bad.png" in result.stderr and "explained 2 images" in result.stdout
    assert len(list((tmp_path / "o").glob("*.json"))) == 2


def test_compat_mode_on_the_cluster_writes_the_files_of_a_local_run(cluster, tmp_path,
                                                                    monkeypatch, capsys):
    from test_compat import tiny_setup as make_setup  # noqa: F401  (the -c/-f model and images)
    setup = make_setup.__wrapped__(tmp_path, monkeypatch)
    import shutil
    from caffelrp import cli
    for k in range(3):
        shutil.copy(setup / "someimages" / "good.png", setup / "someimages" / ("g%d.png" % k))
    (setup / "list.txt").write_text("someimages/g0.png -2\nsomeimages/grey.png -2\n"
                                    "someimages/g1.png 3\nsomeimages/g2.png 3\n")
    argv = ["-c", "cfg.txt", "-f", "list.txt", "--batch-size", "1", "--threads", "1"]
    assert cli.main(argv) == 1
    local = files_of(setup / "lrp_output" / "someimages")
    shutil.rmtree(setup / "lrp_output")
    capsys.readouterr()
    assert cli.main(argv + ["--dask", cluster.scheduler_address]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "grey.png: grayscale image" in err
    assert len(local) == 12 and files_of(setup / "lrp_output" / "someimages") == local


def test_cluster_progress_shows_rate_and_eta():
    from caffelrp import distributed as dist
    from terminal import Terminal
    stream = Terminal()
    clock = iter([100.0, 110.0])              # start, then 10 s later
    progress = dist.ClusterProgress(40, stream=stream, clock=lambda: next(clock))
    progress.advance(10, workers=2)
    line = stream.getvalue()
    # 10 images in 10 s: 1 image/s, 30 left: 30 s
    assert "10/40 images, 1.00 images/s, ETA 0:30, 2 workers" in line
