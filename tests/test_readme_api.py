"""The README's "Using it from Python" examples run as written, on both backends: each
```python block of that section is executed on its own (a fresh namespace, a temporary
working directory), with the database ``"runs.db"`` replaced by the test's database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SECTION = "## Using it from Python"
VERBS = [
    "clusterstore.open(",
    "store.cluster(",
    "store.record(",
    "store.runs(",
    "store.run(",
    "store.labels(",
    "store.compare(",
    "store.verify(",
    "store.export(",
    "store.assign(",
    "store.catch_up(",
]


def python_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_every_verb_has_an_example() -> None:
    blocks = python_blocks()
    for verb in VERBS:
        assert any(verb in block for block in blocks), f"no README example calls {verb}"
    assert all('clusterstore.open("runs.db")' in block for block in blocks)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_the_readme_example_runs(
    index: int, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = python_blocks()[index]
    monkeypatch.chdir(tmp_path)
    code = compile(
        block.replace('"runs.db"', repr(db_url)), f"README.md python block {index}", "exec"
    )
    exec(code, {"__name__": f"readme_{index}"})
