"""``explain --dask ADDRESS`` (and the -c/-f mode's): the batches of a run as tasks on a Dask
distributed cluster.

Dask (``pip install caffelrp[dask]``) is imported only when --dask is given. A task is one batch
of (image, stem); it runs ``cli.explain_batch``, the same function a local run calls, so the files
are the same bytes as those of a local run at the same thread count. Each worker process loads the
net once from the paths (every worker must see the model, the images and --out at the same paths,
e.g. on a shared file system): only paths and settings go through the scheduler, never weights or
arrays. Outputs are written by the workers with the atomic writer (temporary file + rename), the
sidecar last, so --resume sees the same complete files whatever the cluster did. A worker that dies
has its tasks rerun elsewhere by the scheduler (and ``retries`` covers a task that raised); the
temporary files of a killed worker are removed at the end of the run.
"""
import os
import sys
import threading
import time
from pathlib import Path

from . import cli  # noqa: F401  (cli imports this module; only its functions are used here)
from .errors import CaffeLRPError
from .files import remove_orphaned_temporaries

RETRIES = 2
INSTALL_HINT = "--dask needs Dask's distributed scheduler: pip install 'caffelrp[dask]'"


def add_options(parser):
    group = parser.add_argument_group("on a Dask cluster (pip install 'caffelrp[dask]')")
    group.add_argument("--dask", metavar="ADDRESS",
                       help="run the batches as tasks on a Dask scheduler: tcp://host:8786, or "
                            "local:N for a cluster of N worker processes on this machine; "
                            "workers must see the model, the images and --out at the same paths")
    group.add_argument("--dask-scheduler-file", metavar="FILE",
                       help="connect to the scheduler written to this file (dask scheduler "
                            "--scheduler-file FILE)")
    group.add_argument("--threads", type=int, metavar="N",
                       help="kernel threads per process (default: every core, or "
                            "CAFFELRP_NUM_THREADS; with --dask, each worker's share of its "
                            "machine's cores)")


# ------------------------------------------------------------------------- the client side
def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise cli.UsageError(INSTALL_HINT) from None
    return distributed


def connect(args):
    """(client, cluster or None) for --dask / --dask-scheduler-file; UsageError when the
    scheduler cannot be reached."""
    if args.dask and args.dask_scheduler_file:
        raise cli.UsageError("give --dask or --dask-scheduler-file, not both")
    distributed = _import_distributed()
    address = args.dask
    if address and address.startswith("local:"):
        try:
            n = int(address[len("local:"):])
        except ValueError:
            n = 0
        if n < 1:
            raise cli.UsageError("--dask local:N takes a number of worker processes >= 1, got %r"
                                 % address)
        import logging
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        return distributed.Client(cluster), cluster
    if args.dask_scheduler_file and not Path(args.dask_scheduler_file).is_file():
        raise cli.UsageError("--dask-scheduler-file %s: no such file" % args.dask_scheduler_file)
    where = address or args.dask_scheduler_file
    try:
        if address:
            client = distributed.Client(address)
        else:
            client = distributed.Client(scheduler_file=args.dask_scheduler_file)
    except (OSError, ValueError, TypeError) as e:
        raise cli.UsageError("cannot reach the Dask scheduler %s: %s" % (where, e)) from None
    return client, None


def _workers_per_host(client):
    """{host: number of worker processes}: a worker's share of the cores is cores // that."""
    counts = {}
    for address in client.scheduler_info()["workers"]:
        host = address.split("://")[-1].rsplit(":", 1)[0]
        counts[host] = counts.get(host, 0) + 1
    return counts


class ClusterProgress:
    """The whole cluster's progress on stderr (terminal only): images, images/s, ETA."""

    def __init__(self, total, quiet=False, stream=None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.enabled = (not quiet) and total > 0 and self.stream.isatty()
        self.clock = clock   # tests pass their own: time.monotonic is read by Dask's loop too
        self.total, self.done, self.start = total, 0, clock()

    def advance(self, n=1, workers=0):
        self.done += n
        if not self.enabled:
            return
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0
        filled = int(30 * self.done / self.total)
        self.stream.write("\r[%s%s] %d/%d images, %.2f images/s, ETA %d:%02d, %d workers " % (
            "#" * filled, "." * (30 - filled), self.done, self.total, rate, eta // 60, eta % 60,
            workers))
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def explain_on_cluster(args, pending, target, run, out_dir, geometry, report):
    """``explain``: run ``pending`` [(image, stem)] in batches on the cluster; the exit code."""
    if args.shared_scale and args.scale is None:
        raise cli.UsageError("--shared-scale needs every image's relevance in one process; with "
                             "--dask give a fixed --scale instead")
    in_h, in_w, base, _ = geometry
    job = {"prototxt": run["model"]["prototxt"], "weights": run["model"]["weights"],
           "mean": args.mean, "geometry": (in_h, in_w, base), "target": target, "args": args,
           "run": run, "out_dir": str(out_dir)}
    chunks = [pending[i:i + args.batch_size] for i in range(0, len(pending), args.batch_size)]
    failed = [[image for image, _ in chunk] for chunk in chunks]
    run_tasks(args, explain_task, chunks, failed, job, report, [out_dir])
    return report.finish("explained", out_dir)


def compat_on_cluster(args, batches, config, start, report):
    """The -c/-f mode: the batches of list entries on the cluster. Paths in the config and the
    list are relative to the working directory, which each worker takes from this process."""
    job = {"config": config, "filelist": args.filelist, "start": start, "cwd": os.getcwd(),
           "args": args}
    failed = [[entry.path for entry in batch] for batch in batches]
    folders = {os.path.dirname(compat_output_base(config, entry)) for batch in batches
               for entry in batch}
    run_tasks(args, compat_task, batches, failed, job, report, sorted(folders))
    return report.finish("explained", config.standalone_outpath)


def compat_output_base(config, entry):
    from . import compat
    try:
        return compat.output_base(entry.path, config.standalone_rootpath,
                                  config.standalone_outpath)
    except CaffeLRPError:
        return config.standalone_outpath


def run_tasks(args, task, chunks, failed, job, report, out_dirs):
    """Submit ``task(chunk, job)`` per chunk, collect (done, failures) as they finish, with one
    progress bar for the cluster; ``failed[i]`` names the images of chunk i should it fail."""
    client, cluster = connect(args)
    started = time.time()
    try:
        if not client.scheduler_info()["workers"] and not args.quiet:
            print("the Dask scheduler has no workers yet: the tasks wait until one joins",
                  file=sys.stderr)
        job = dict(job, per_host=_workers_per_host(client))
        # pure=False: a rerun with --resume must run again, not reuse a remembered result
        futures = {client.submit(task, chunk, job, retries=RETRIES, pure=False): i
                   for i, chunk in enumerate(chunks)}
        progress = ClusterProgress(sum(len(c) for c in chunks), args.quiet)
        distributed = _import_distributed()
        for future in distributed.as_completed(futures):
            i = futures[future]
            try:
                done, failures = future.result()
            except Exception as e:   # a task that failed on every try, or a KilledWorker
                done = 0
                failures = ["%s: %s: %s" % (name, type(e).__name__, e) for name in failed[i]]
            report.done += done
            report.failures.extend(failures)
            progress.advance(len(chunks[i]), len(client.scheduler_info()["workers"]))
        progress.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    for folder in out_dirs:
        remove_orphaned_temporaries(folder, started)


# ------------------------------------------------------------------------- the worker side
_CACHE = {}                   # per worker process: the net and the mean of the paths given
_LOCK = threading.Lock()      # one batch at a time per process (the kernels use every thread)


class _Silent:
    """A worker draws no progress: the client's ClusterProgress counts finished tasks."""

    def working(self, n):
        pass

    def advance(self, *args, **kwargs):
        pass


def _worker_threads(job):
    """--threads, else this worker's share of its machine's cores."""
    if job["args"].threads:
        return job["args"].threads
    try:
        from distributed import get_worker
        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
    except (ImportError, ValueError):
        import socket    # here: only a worker needs it, every command imports this module
        host = socket.gethostname()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // job["per_host"].get(host, 1))


def _use_threads(job):
    from .threads import get_num_threads, set_num_threads
    threads = _worker_threads(job)
    if get_num_threads() != threads:
        set_num_threads(threads)


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def _file_key(path):
    if path is None:
        return None
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def explain_task(chunk, job):
    """One batch on a worker: (images done, failure messages)."""
    from .methods import METHODS
    args = job["args"]
    with _LOCK:
        _use_threads(job)
        net = _cached(("net", _file_key(job["prototxt"]), _file_key(job["weights"])),
                      lambda: cli.load_net(job["prototxt"], job["weights"]))
        mean = _cached(("mean", job["mean"]), lambda: cli.resolve_mean(job["mean"]))
        report = cli.Report(quiet=True)
        try:
            cli.explain_batch(net, METHODS[args.method], chunk, job["target"], args, job["run"],
                              Path(job["out_dir"]), tuple(job["geometry"]) + (mean,), report,
                              _Silent(), [])
        except CaffeLRPError as e:
            report.failures.extend("%s: %s" % (image, e) for image, _ in chunk)
        return report.done, report.failures


def compat_task(batch, job):
    """One batch of list entries on a worker: (images done, failure messages)."""
    from .preprocess import read_mean_file
    config = job["config"]
    with _LOCK:
        _use_threads(job)
        here = os.getcwd()
        os.chdir(job["cwd"])     # the config's relative paths, as in the submitting process
        try:
            net = _cached(("net", _file_key(config.param_file), _file_key(config.model_file)),
                          lambda: cli.load_net(config.param_file, config.model_file))
            mean = _cached(("mean", _file_key(config.mean_file)), lambda: read_mean_file(
                config.mean_file, config.use_mean_file_asbinaryprotoblob))
            in_h, in_w = cli.image_input(net)
            report = cli.Report(quiet=True)
            try:
                cli.compat_batch(net, batch, config, job["filelist"], (in_h, in_w, mean),
                                 job["start"], report, _Silent())
            except CaffeLRPError as e:
                report.failures.extend("%s: %s" % (entry.path, e) for entry in batch)
        finally:
            os.chdir(here)
        return report.done, report.failures
