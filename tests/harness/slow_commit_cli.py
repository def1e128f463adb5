"""The clusterstore CLI with every append transaction held open before its COMMIT:

    HARNESS_PID_FILE=/tmp/x python -m tests.harness.slow_commit_cli SECONDS --db URL ...

Each append sleeps SECONDS after its events, commit row and NOTIFY are written and before
COMMIT, so a test can find the writer's backend ``idle in transaction`` and cut it off
exactly there (the worst moment: a global position is allocated, not yet committed). On
PostgreSQL the backend's pid is written to ``$HARNESS_PID_FILE`` before each sleep, so the
test terminates this process's own backend and no other.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from clusterstore.eventstore.postgres import PostgresRecorder
from clusterstore.eventstore.sqlite import SQLiteRecorder


def hold_before_commit(cls: Any, seconds: float) -> None:
    after = cls._after_append
    pid_file = os.environ.get("HARNESS_PID_FILE")

    def after_then_hold(self: Any, conn: Any, position: int) -> None:
        after(self, conn, position)
        if pid_file and self.dialect_name == "postgresql":
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with open(pid_file + ".tmp", "w") as f:
                f.write(f"{backend}\n")
            os.replace(pid_file + ".tmp", pid_file)
        time.sleep(seconds)

    cls._after_append = after_then_hold


def main(argv: list[str]) -> None:
    for cls in (PostgresRecorder, SQLiteRecorder):
        hold_before_commit(cls, float(argv[0]))
    from clusterstore.cli.main import cli

    cli.main(argv[1:], prog_name="clusterstore")


if __name__ == "__main__":
    main(sys.argv[1:])
