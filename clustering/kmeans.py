"""faiss k-means: training on a sample we chose, and nearest-centroid assignment.

What was measured on these 2-core machines shapes this module (benchmarks/README.md):
- faiss's OpenMP threads spin while waiting and its bundled BLAS starts its own threads:
  with 2 threads faiss ran 1.4-3.5x slower than with 1 until ``OMP_WAIT_POLICY=PASSIVE``
  and ``OPENBLAS_NUM_THREADS=1`` were set *before faiss is imported*. ``faiss_module``
  sets both (unless the user set them) and imports faiss lazily.
- The default is 1 thread: the writer needs the other core while rows are assigned, the
  assignment (~1.2 s per 1M x 384 rows at k=100) hides behind writing, and the labels do
  not depend on how many cores the machine has (1 vs 2 threads changed labels).
- faiss silently subsamples to ``max_points_per_centroid * k`` rows and warns on stderr
  (uncatchable from Python) below ``min_points_per_centroid * k``; we sample ourselves,
  check the sizes ourselves, and switch both faiss behaviours off.
- The seed is always passed (faiss defaults to 1234; a negative seed means the clock).
- Spherical k-means in faiss only normalises the centroids: the caller normalises the
  inputs (``normalize_rows``) and rows are labelled with an inner-product index.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

FAISS_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"}
MIN_POINTS_PER_CENTROID = 39  # faiss's own threshold for "too few training points"
MAX_SEED = 2**31 - 1  # faiss seeds are C ints; negative means 'the clock'
_NO_SUBSAMPLING = 2**31 - 1

_faiss: ModuleType | None = None


def faiss_module() -> ModuleType:
    """faiss, imported on first use with the thread environment above."""
    global _faiss
    if _faiss is None:
        for key, value in FAISS_ENV.items():
            os.environ.setdefault(key, value)
        import faiss

        _faiss = faiss
    return _faiss


def faiss_version() -> str:
    return str(faiss_module().__version__)


def normalize_rows(x: npt.NDArray[np.float32]) -> None:
    """L2-normalise the rows of a C-contiguous float32 array in place (faiss's kernel, the
    same for training and assignment)."""
    faiss_module().normalize_L2(x)


@dataclass(frozen=True)
class Trained:
    centroids: npt.NDArray[np.float32]  # k x d
    objective: float | None
    iterations: int
    seconds: float


def train(
    sample: npt.NDArray[np.float32],
    k: int,
    *,
    spherical: bool,
    iterations: int,
    seed: int,
    threads: int,
) -> Trained:
    """k-means on exactly the rows of ``sample`` (normalised already when spherical)."""
    faiss = faiss_module()
    faiss.omp_set_num_threads(threads)
    cp = faiss.ClusteringParameters()
    cp.niter = iterations
    cp.seed = seed
    cp.spherical = spherical
    cp.verbose = False
    cp.max_points_per_centroid = _NO_SUBSAMPLING  # never subsample: the sample is ours
    cp.min_points_per_centroid = 1  # the size check (and its message) is ours
    d = sample.shape[1]
    clustering = faiss.Clustering(d, k, cp)
    index = faiss.IndexFlatIP(d) if spherical else faiss.IndexFlatL2(d)
    t0 = time.perf_counter()
    clustering.train(np.ascontiguousarray(sample, dtype=np.float32), index)
    seconds = time.perf_counter() - t0
    centroids = faiss.vector_float_to_array(clustering.centroids).reshape(k, d)
    stats = clustering.iteration_stats
    objective = float(stats.at(stats.size() - 1).obj) if stats.size() else None
    return Trained(centroids.astype(np.float32), objective, int(stats.size()), seconds)


class Assigner:
    """Nearest centroid for chunks of rows. ``distance`` is the squared Euclidean distance
    (L2) or the cosine distance ``1 - cos`` (spherical), clipped at 0."""

    def __init__(self, centroids: npt.NDArray[np.float32], *, spherical: bool, threads: int):
        faiss = faiss_module()
        faiss.omp_set_num_threads(threads)
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        self.spherical = spherical
        self.index: Any = (
            faiss.IndexFlatIP(c.shape[1]) if spherical else faiss.IndexFlatL2(c.shape[1])
        )
        self.index.add(c)

    def assign(
        self, x: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
        """Labels and distances for the rows of ``x`` (normalised in place when spherical)."""
        if self.spherical:
            normalize_rows(x)
        dist, labels = self.index.search(x, 1)
        d = dist[:, 0]
        if self.spherical:
            d = 1.0 - d
        return labels[:, 0].astype(np.uint32), np.maximum(d, 0, dtype=np.float32)
