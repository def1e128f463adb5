"""The harness driver: CLI processes writing, following and reading one store at once,
while chosen ones are SIGKILLed at seeded points and later resumed or restarted.

Per round, ``writers`` ``clusterstore cluster`` processes start together (each on its own
input, with its own seed); ``kills`` of them are SIGKILLed once their run's head reaches a
seeded row (a point before the centroids means the run cannot be resumed). The follower
(``projections catch-up --follow``) runs throughout and is SIGKILLed ``follower_kills``
times per round at seeded log positions, then restarted; a reader process runs the read
commands in a loop. After the rounds every killed run is resumed (``runs resume``) and
compared with an uninterrupted run of the same input and seed. ``checks`` then looks at
the store as a whole.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import numpy as np
from click.testing import CliRunner

from clusterstore import projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore, RunStarted

TIMEOUT = 900  # seconds for anything to happen before the harness gives up
POLL = 0.01
FORBIDDEN = ("database is locked", "Traceback", "DatabaseBusyError")
# A writer chosen to be killed holds each append transaction open this long before COMMIT
# (tests.harness.slow_commit_cli): a small run is over in a blink otherwise, and the kill
# then lands at the worst moment, with a position allocated and not committed.
VICTIM_HOLD = 0.05


@dataclass(frozen=True)
class Spec:
    writers: int  # concurrent writer processes per round
    n: int  # embeddings per input
    rounds: int = 1
    dim: int = 16
    k: int = 8
    batch_size: int = 250
    kills: int = 1  # writers SIGKILLed per round
    follower_kills: int = 0  # follower SIGKILLs (and restarts) per round
    seed: int = 0


@dataclass
class Job:
    index: int
    input: Path
    seed: int
    kill_at: int | None = None  # SIGKILL once the run's head reaches this seq
    run_id: UUID | None = None
    proc: subprocess.Popen[bytes] | None = None
    killed_at_head: int | None = None
    result: dict[str, Any] | None = None  # the --json line of a run that finished
    stderr: str = ""

    @property
    def model(self) -> str:
        return f"h{self.index}"

    def args(self, spec: Spec, model: str | None = None) -> list[str]:
        return [
            "cluster",
            str(self.input),
            "--model",
            model or self.model,
            "--k",
            str(spec.k),
            "--seed",
            str(self.seed),
            "--batch-size",
            str(spec.batch_size),
            "--json",
        ]


@dataclass
class Report:
    backend: str
    spec: Spec
    jobs: list[Job] = field(default_factory=list)
    kills_landed: int = 0
    kills_missed: int = 0  # the run finished before its kill point
    follower_restarts: int = 0
    resumed: int = 0
    unresumable: int = 0  # killed before their centroids: reported incomplete
    warnings: list[str] = field(default_factory=list)
    reader: dict[str, Any] = field(default_factory=dict)
    events: int = 0
    runs: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        s = self.spec
        return {
            "backend": self.backend,
            "size": f"{s.rounds} round(s) x {s.writers} writers x {s.n:,} embeddings "
            f"(dim {s.dim}, k {s.k}, batch {s.batch_size})",
            "runs": self.runs,
            "events": self.events,
            "kills": {"landed": self.kills_landed, "missed": self.kills_missed},
            "resumed": self.resumed,
            "unresumable (reported incomplete)": self.unresumable,
            "follower restarts": self.follower_restarts,
            "reader commands": self.reader.get("commands"),
            "warnings": len(self.warnings),
            "seconds": round(self.seconds, 1),
        }


def write_input(path: Path, n: int, dim: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    centres = 6 * rng.standard_normal((12, dim))
    x = centres[rng.integers(0, 12, n)] + rng.standard_normal((n, dim))
    np.save(path, x.astype(np.float32))
    return path


class Harness:
    def __init__(self, db_url: str, workdir: Path, spec: Spec, env: dict[str, str]):
        self.db_url = db_url
        self.workdir = workdir
        self.spec = spec
        self.env = env
        self.rng = random.Random(spec.seed)
        self.store = EventStore.open(db_url)
        self.report = Report(self.store.backend, spec)
        self.follower: subprocess.Popen[bytes] | None = None
        self.follower_name = ""
        self._attempt = 0
        self._logs: list[IO[bytes]] = []

    # ------------------------------------------------------------------ processes

    def spawn(
        self, args: list[str], name: str, module: str = "clusterstore"
    ) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{name}.out", "wb")  # noqa: SIM115  (closed in close())
        err = open(self.workdir / f"{name}.err", "wb")  # noqa: SIM115
        self._logs += [out, err]
        cmd = [
            sys.executable,
            "-m",
            module,
            *([] if module != "clusterstore" else ["--db", self.db_url]),
        ]
        return subprocess.Popen([*cmd, *args], stdout=out, stderr=err, env=self.env)

    def text(self, name: str, stream: str) -> str:
        return (self.workdir / f"{name}.{stream}").read_text(errors="replace")

    def start_follower(self) -> None:
        self.follower_name = f"follower-{self.report.follower_restarts}-{self._attempt}"
        self._attempt += 1
        self.follower = self.spawn(
            ["projections", "catch-up", "--follow", "--quiet"], self.follower_name
        )

    def watch_follower(self) -> None:
        """Called in every poll: the follower never ends by itself (it waits for a writer's
        own end-of-run catch-up instead of refusing to start)."""
        assert self.follower is not None
        code = self.follower.poll()
        assert code is None, (code, self.text(self.follower_name, "err"))

    def kill_follower(self) -> None:
        assert self.follower is not None
        self.follower.send_signal(signal.SIGKILL)
        self.follower.wait()
        self.report.follower_restarts += 1
        self.start_follower()

    def stop_follower(self) -> None:
        """Wait until the read models reached the log's head, then SIGTERM (a clean stop:
        exit 0)."""
        assert self.follower is not None
        deadline = time.monotonic() + TIMEOUT
        while any(s.lag > 0 for s in projections.status(self.store)):
            self.watch_follower()
            assert time.monotonic() < deadline, "the follower did not catch up"
            time.sleep(0.2)
        self.follower.send_signal(signal.SIGTERM)
        # 0: it stopped between batches or while waiting for a lock; -SIGTERM: it was still
        # starting up (importing, on a loaded machine), before it installed its handler
        code = self.follower.wait(timeout=60)
        assert code in (0, -signal.SIGTERM), (code, self.text(self.follower_name, "err"))

    # ------------------------------------------------------------------ a round

    def round(self, number: int, inputs: list[Path]) -> None:
        s = self.spec
        jobs = [
            Job(number * s.writers + w, inputs[w], seed=s.seed * 1000 + number * s.writers + w)
            for w in range(s.writers)
        ]
        for job in self.rng.sample(jobs, s.kills):
            f = self.rng.random()
            job.kill_at = 1 if f < 0.1 else 2 + int(f * s.n)  # 1: likely before centroids
        expected = sum(s.n + 3 for _ in jobs)
        base = self.store.max_position()
        # seeded points in the first half of what the round writes (the killed writers
        # write less); one not reached by the end of the round happens then
        follower_kills = sorted(
            base + int(self.rng.uniform(0.05, 0.5) * expected) for _ in range(s.follower_kills)
        )
        self.report.jobs += jobs
        for job in jobs:
            if job.kill_at is None:
                job.proc = self.spawn(job.args(s), job.model)
            else:  # each append held open a moment, so the kill lands mid-run
                hold = [str(VICTIM_HOLD), "--db", self.db_url, *job.args(s)]
                job.proc = self.spawn(hold, job.model, module="tests.harness.slow_commit_cli")
        deadline = time.monotonic() + TIMEOUT
        while any(j.proc is not None and j.proc.poll() is None for j in jobs):
            assert time.monotonic() < deadline, "the writers did not finish"
            self._map_runs(jobs)
            for job in jobs:
                self._maybe_kill(job)
            self.watch_follower()
            if follower_kills and self.store.max_position() >= follower_kills[0]:
                follower_kills.pop(0)
                self.kill_follower()
            time.sleep(POLL)
        for _ in follower_kills:
            self.kill_follower()
        self._map_runs(jobs)
        for job in jobs:
            self._collect(job)

    def _map_runs(self, jobs: list[Job]) -> None:
        """Which run is which job's: the model name in its RunStarted."""
        unmapped = {j.model: j for j in jobs if j.run_id is None}
        if not unmapped:
            return
        known = {j.run_id for j in self.report.jobs}
        for head in self.store.runs():
            if head.run_id in known or head.head == 0:
                continue
            first = next(iter(self.store.read(head.run_id, limit=1)))
            if isinstance(first.event, RunStarted) and first.event.model in unmapped:
                unmapped.pop(first.event.model).run_id = head.run_id

    def _maybe_kill(self, job: Job) -> None:
        if job.kill_at is None or job.run_id is None or job.killed_at_head is not None:
            return
        assert job.proc is not None
        if job.proc.poll() is not None:
            return
        head = self.store.head(job.run_id)
        if head >= job.kill_at:
            job.proc.send_signal(signal.SIGKILL)
            job.proc.wait()
            job.killed_at_head = head

    def _collect(self, job: Job) -> None:
        assert job.proc is not None
        job.stderr = self.text(job.model, "err")
        code = job.proc.wait()
        if job.killed_at_head is not None:
            assert code == -signal.SIGKILL
            self.report.kills_landed += 1
            return
        if job.kill_at is not None:
            self.report.kills_missed += 1
        assert code == 0, (job.model, job.stderr)
        job.result = json.loads(self.text(job.model, "out"))
        assert job.result["run_id"] == str(job.run_id)
        self.report.warnings += [x for x in job.stderr.splitlines() if x.startswith("Warning")]

    # ------------------------------------------------------------------ after the rounds

    def resume_killed(self) -> None:
        """Each killed run: reported incomplete; then resumed to the digest of an
        uninterrupted run of the same input and seed, or (killed before its centroids)
        refused and still reported incomplete."""
        killed = [j for j in self.report.jobs if j.killed_at_head is not None]
        for job in killed:
            assert job.run_id is not None
            assert self._status(job.run_id) == "running"
            assert self.invoke("runs", "verify", str(job.run_id)).exit_code == 0
            resumed = self.invoke("runs", "resume", str(job.run_id), "--json")
            if resumed.exit_code == 1 and "stopped before its centroids" in resumed.stderr:
                self.report.unresumable += 1
                assert self._status(job.run_id) == "running"
                continue
            assert resumed.exit_code == 0, resumed.output
            self.report.warnings += [
                x for x in resumed.stderr.splitlines() if x.startswith("Warning")
            ]
            job.result = json.loads(resumed.stdout)
            reference = self.invoke(*job.args(self.spec, model=f"{job.model}-ref"))
            assert reference.exit_code == 0, reference.output
            assert (
                job.result["assignment_digest"] == json.loads(reference.stdout)["assignment_digest"]
            ), job.model
            self.report.resumed += 1

    def _status(self, run_id: UUID) -> str:
        rows = json.loads(self.invoke("runs", "list", "--json").stdout)
        return next(r["status"] for r in rows if r["run_id"] == str(run_id))

    def invoke(self, *args: str) -> Any:
        return CliRunner().invoke(cli, ["--db", self.db_url, *args])

    # ------------------------------------------------------------------ the whole run

    def run(self) -> Report:
        start = time.monotonic()
        s = self.spec
        inputs = [
            write_input(self.workdir / f"in{w}.npy", s.n, s.dim, seed=s.seed * 100 + w)
            for w in range(s.writers)
        ]
        stop = self.workdir / "stop-reader"
        reader = self.spawn(
            [self.db_url, str(stop), str(self.workdir / "reader.json")],
            "reader",
            module="tests.harness.reader",
        )
        self.start_follower()
        try:
            for number in range(s.rounds):
                self.round(number, inputs)
            self.resume_killed()
            self.stop_follower()
        finally:
            stop.touch()
            for proc in [self.follower, *(j.proc for j in self.report.jobs)]:
                if proc is not None and proc.poll() is None:  # only after a failure
                    proc.kill()
                    proc.wait()
            try:  # it finishes the command it is running (a verify of every run)
                reader.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                reader.kill()
        assert reader.wait() == 0, self.text("reader", "err")
        self.report.reader = json.loads((self.workdir / "reader.json").read_text())
        self.report.seconds = time.monotonic() - start
        return self.report

    def process_logs(self) -> dict[str, str]:
        """Every child's stderr, by name."""
        return {p.stem: p.read_text(errors="replace") for p in self.workdir.glob("*.err")}

    def close(self) -> None:
        for f in self._logs:
            f.close()
        self.store.close()
