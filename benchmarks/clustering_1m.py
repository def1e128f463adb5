"""Clustering a large input end to end, and resuming a run killed halfway.

    python -m clusterstore.benchmarks.clustering_1m make-input /tmp/cs_bench/emb_1m_384.npy
    python -m clusterstore.benchmarks.clustering_1m run /tmp/cs_bench/emb_1m_384.npy \
        --db /tmp/cs_bench/a.db
    python -m clusterstore.benchmarks.clustering_1m kill-resume /tmp/cs_bench/emb_1m_384.npy \
        --db /tmp/cs_bench/b.db

Each prints one JSON object: the run's timings (validate = the checking pass with the
digest; train; assign = worker-thread time reading rows and labelling them; write = time
appending; assign_write = wall time of the overlapped assign + write phase), the
projection catch-up time when the ``projections`` package provides ``catch_up_all``, and
the peak RSS of the process that did the work. Keep inputs out of the repository (/tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_input(path: Path, n: int, dim: int, topics: int, seed: int) -> None:
    """Gaussian blobs, float32, written in 100k-row blocks (never all in memory)."""
    import numpy as np

    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        noise = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        out[lo:hi] = centres[rng.integers(0, topics, hi - lo)] + 0.5 * noise
    out.flush()


def catch_up(store: Any) -> float:
    """Seconds to bring the projections up to date."""
    from clusterstore.projections import catch_up_all

    t0 = time.perf_counter()
    catch_up_all(store)
    return round(time.perf_counter() - t0, 3)


def measured(db: str, work: Callable[[Any], Any], *, after: bool = False) -> dict[str, Any]:
    """Run ``work(store)`` with the projections following the log on a background thread
    (``projections.alongside``, as ``clusterstore cluster`` does), then the catch-up that
    makes them current (``after``: no follower, the whole catch-up after the work); wall
    time, CPU time and peak RSS. ``total_s`` is work + catch-up: the run recorded and the
    read models current."""
    from clusterstore.eventstore import EventStore
    from clusterstore.projections import alongside

    baseline = peak_rss_mb()
    with EventStore.open(db) as store:
        t0, cpu0 = time.perf_counter(), time.process_time()
        if after:
            result = work(store)
        else:
            with alongside(store):
                result = work(store)
        wall = time.perf_counter() - t0
        projection_s = catch_up(store)
        total = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        backend = store.backend
    return {
        "run_id": str(result.run_id),
        "backend": backend,
        "n": result.n_embeddings,
        "k": result.k,
        "resumed_from": result.resumed_from,
        "n_written": result.n_written,
        "digest": result.digest,
        "wall_s": round(wall, 3),
        "total_s": round(total, 3),
        "cpu_s": round(cpu, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "projection": "after" if after else "alongside",
        "timings": result.timings,
        "projection_s": projection_s,
        "rss_after_imports_mb": round(baseline, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from clusterstore.clustering import ClusterSettings, cluster_file

    settings = ClusterSettings(
        model="bench",
        k=args.k,
        seed=args.seed,
        threads=args.threads,
        batch_size=args.batch_size,
    )
    return measured(
        args.db, lambda store: cluster_file(store, args.input, settings), after=args.after
    )


def resume_child(args: argparse.Namespace) -> dict[str, Any]:
    from clusterstore.clustering import resume

    return measured(args.db, lambda store: resume(store, args.run))


def kill_resume(args: argparse.Namespace) -> dict[str, Any]:
    """Run the CLI in a child, SIGKILL it once half the rows are in the log, resume in
    another child (so the resume's peak RSS is its own)."""
    from clusterstore.eventstore import EventStore

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "clusterstore",
        "--db",
        args.db,
        "cluster",
        str(args.input),
        "--model",
        "bench",
        "--k",
        str(args.k),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--quiet",
    ]
    with EventStore.open(args.db) as store:
        known = {h.run_id for h in store.runs()}
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        rows = 0
        while child.poll() is None:
            new = [h for h in store.runs() if h.run_id not in known]
            if new:
                rows = max(0, store.head(new[0].run_id) - 2)
                if rows >= args.kill_at * _rows(args.input):
                    break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_after = time.perf_counter() - t0
        run_id = new[0].run_id
        rows = store.head(run_id) - 2
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "clusterstore.benchmarks.clustering_1m",
            "resume-child",
            args.db,
            str(run_id),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    resumed = json.loads(out.stdout)
    return {"killed_after_s": round(killed_after, 3), "rows_before_kill": rows, "resume": resumed}


def _rows(path: Path) -> int:
    import numpy as np

    return int(np.load(path, mmap_mode="r").shape[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-input")
    mk.add_argument("path", type=Path)
    mk.add_argument("--n", type=int, default=1_000_000)
    mk.add_argument("--dim", type=int, default=384)
    mk.add_argument("--topics", type=int, default=100)
    mk.add_argument("--seed", type=int, default=0)
    for name in ("run", "kill-resume"):
        sp = sub.add_parser(name)
        sp.add_argument("input", type=Path)
        sp.add_argument("--db", required=True)
        sp.add_argument("--k", type=int, default=100)
        sp.add_argument("--seed", type=int, default=1)
        sp.add_argument("--threads", type=int, default=1)
        sp.add_argument("--batch-size", type=int, default=100_000)
        sp.add_argument("--kill-at", type=float, default=0.5, help="fraction of rows")
        sp.add_argument(
            "--after", action="store_true", help="project after the run, not alongside it"
        )
    rc = sub.add_parser("resume-child")
    rc.add_argument("db")
    rc.add_argument("run")
    args = p.parse_args()
    if args.cmd == "make-input":
        make_input(args.path, args.n, args.dim, args.topics, args.seed)
        return
    handler = {"run": run, "kill-resume": kill_resume, "resume-child": resume_child}[args.cmd]
    print(json.dumps(handler(args), indent=2))


if __name__ == "__main__":
    main()
