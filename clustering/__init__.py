"""Clustering runs with faiss k-means, recorded in the event store.

    from clusterstore.clustering import ClusterSettings, cluster_file, resume
    result = cluster_file(store, "emb.npy", ClusterSettings(model="m", k=100, seed=7))
    resume(store, "0192f3")  # continue a killed or failed run

See ``runner`` for the steps, ``inputs`` for the input formats and the input digest,
``ids`` for embedding ids, ``kmeans`` for the faiss settings and the measurements behind them.
"""

from .demo import DEMO_BATCH_SIZE, DEMO_MODELS, run_demo
from .files import load_ids, open_source
from .ids import derived_ids
from .inputs import ArraySource, EmbeddingSource
from .kmeans import faiss_version
from .runner import (
    ALGORITHMS,
    ClusterResult,
    ClusterSettings,
    Reporter,
    SilentReporter,
    cluster,
    cluster_file,
    resume,
)

__all__ = [
    "ALGORITHMS",
    "DEMO_BATCH_SIZE",
    "DEMO_MODELS",
    "ArraySource",
    "ClusterResult",
    "ClusterSettings",
    "EmbeddingSource",
    "Reporter",
    "SilentReporter",
    "cluster",
    "cluster_file",
    "derived_ids",
    "faiss_version",
    "load_ids",
    "open_source",
    "resume",
    "run_demo",
]
