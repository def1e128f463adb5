"""A reader process for the harness: ``python -m tests.harness.reader DB STOP OUT``.

Until the file STOP exists, runs the read commands in a loop through click's CliRunner
(one interpreter, so the loop is not dominated by start-up): ``runs list --json``,
``runs verify --all --json``, ``projections status --json`` and ``runs show`` of the newest
run. Every answer must be exit 0 without a traceback, whatever the writers, the follower
and the killer are doing at that moment. Writes one JSON object to OUT: how many commands
ran and the problems seen (command, exit code, the output's last lines).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from click.testing import CliRunner

from clusterstore.cli.main import cli

PAUSE = 0.1  # leave the CPUs to the writers between rounds


def one(db: str, args: list[str], problems: list[dict[str, Any]]) -> Any:
    result = CliRunner().invoke(cli, ["--db", db, *args])
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    if result.exit_code != 0 or crashed:
        problems.append(
            {
                "command": args,
                "exit_code": result.exit_code,
                "exception": repr(result.exception) if crashed else None,
                "output": result.output[-2000:],
            }
        )
        return None
    return json.loads(result.stdout) if "--json" in args else result.stdout


def main(db: str, stop: str, out: str) -> None:
    problems: list[dict[str, Any]] = []
    commands = 0
    runs: Any = None
    while True:
        for args in (
            ["runs", "list", "--json"],
            ["runs", "verify", "--all", "--json"],
            ["projections", "status", "--json"],
            ["runs", "show", runs[0]["run_id"]] if runs else None,
        ):
            if os.path.exists(stop):
                with open(out, "w") as f:
                    json.dump({"commands": commands, "problems": problems}, f)
                return
            if args is not None:
                answer = one(db, args, problems)
                runs = answer if args[:2] == ["runs", "list"] else runs
                commands += 1
        time.sleep(PAUSE)
    with open(out, "w") as f:
        json.dump({"commands": commands, "problems": problems}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
