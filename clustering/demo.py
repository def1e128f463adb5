"""``clusterstore demo``: synthetic embeddings for three models, clustered into the store.

The sizes are chosen around the demo's batch size: one model has an exact multiple of it,
one a single row more than a multiple, one neither. The inputs are written as real files
(a ``.npy``, a ``.npz`` and a ``.npy`` with a text ids file) to a temporary directory that
is removed afterwards, so the demo goes through the same path as ``clusterstore cluster``.
Everything is seeded: the demo makes the same embeddings, ids and assignments every time.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clusterstore.eventstore.store import EventStore

from .report import Reporter
from .runner import ClusterResult, ClusterSettings, cluster_file

DEMO_BATCH_SIZE = 5_000


@dataclass(frozen=True)
class DemoModel:
    name: str
    n: int
    dim: int
    k: int
    spherical: bool
    layout: str  # "npy", "npz" or "npy+ids"


DEMO_MODELS = (
    DemoModel("all-MiniLM-L6-v2", 4 * DEMO_BATCH_SIZE, 384, 12, False, "npy"),
    DemoModel("all-mpnet-base-v2", 3 * DEMO_BATCH_SIZE + 1, 768, 8, True, "npz"),
    DemoModel("text-embedding-3-small", 7_321, 512, 5, True, "npy+ids"),
)


def synthetic_embeddings(n: int, dim: int, *, topics: int, seed: int) -> np.ndarray:
    """Unit-length float32 vectors scattered around ``topics`` random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    x = centres[rng.integers(0, topics, n)]
    x += 0.35 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def write_demo_input(model: DemoModel, directory: Path, seed: int) -> tuple[Path, Path | None]:
    x = synthetic_embeddings(model.n, model.dim, topics=model.k + 2, seed=seed)
    stem = directory / model.name
    if model.layout == "npz":
        path = stem.with_suffix(".npz")
        np.savez(path, embeddings=x)
        return path, None
    path = stem.with_suffix(".npy")
    np.save(path, x)
    if model.layout != "npy+ids":
        return path, None
    ids = directory / f"{model.name}.ids.txt"
    rng = np.random.default_rng(seed)
    ids.write_text(
        "".join(
            f"{uuid.UUID(bytes=bytes(b), version=4)}\n"
            for b in rng.integers(0, 256, (model.n, 16), dtype=np.uint8)
        )
    )
    return path, ids


def run_demo(store: EventStore, *, reporter: Reporter | None = None) -> list[ClusterResult]:
    """Cluster the three demo models into ``store``; returns their results."""
    results = []
    with tempfile.TemporaryDirectory(prefix="clusterstore-demo-") as tmp:
        for i, model in enumerate(DEMO_MODELS):
            path, ids = write_demo_input(model, Path(tmp), seed=100 + i)
            settings = ClusterSettings(
                model=model.name,
                k=model.k,
                spherical=model.spherical,
                seed=7 + i,
                batch_size=DEMO_BATCH_SIZE,
            )
            results.append(cluster_file(store, path, settings, ids=ids, reporter=reporter))
    return results
