"""The resume-checkpoint check of ``audit.verify``: a run's stored checkpoint
(``eventstore.checkpoints``) against the state the log gives at the rows it covers."""

from __future__ import annotations

import numpy as np

from clusterstore.eventstore.checkpoints import Checkpoint
from clusterstore.eventstore.digest import DIGEST_V2

from .verify_checker import _Checker


def _check_checkpoint(checker: _Checker, stored: Checkpoint) -> None:
    """The run's resume checkpoint against the state the log gives at its rows."""
    life = checker.life
    started = life.started
    if started is None:  # a run without a readable RunStarted is reported already
        return
    problem = None
    got = life.state_at(stored.rows)
    if started.digest_version != DIGEST_V2:
        problem = f"a run of digest version {started.digest_version} has no checkpoints"
    elif (problem := stored.problem(k=started.k, n_embeddings=started.n_embeddings)) is not None:
        pass
    elif got is None:
        problem = f"it covers {stored.rows} assignments, the log holds {life.rows}"
    elif got.seq != stored.seq:
        problem = f"its {stored.rows} assignments end at seq {stored.seq}, in the log at {got.seq}"
    elif got.chain != stored.chain:
        problem = f"its digest chain after {stored.rows} assignments differs from the log's"
    elif got.sizes is not None and got.n_noise is not None and stored.sizes is not None:
        n = max(len(got.sizes), len(stored.sizes))
        if not np.array_equal(
            np.pad(got.sizes, (0, n - len(got.sizes))),
            np.pad(stored.sizes, (0, n - len(stored.sizes))),
        ):
            problem = f"its cluster sizes after {stored.rows} assignments differ from the log's"
        elif got.n_noise != stored.n_noise:
            problem = (
                f"it counts {stored.n_noise} noise assignments in the first {stored.rows}, "
                f"the log {got.n_noise}"
            )
    if problem is not None:
        checker.add(
            "checkpoint_mismatch",
            None,
            f"the run's resume checkpoint (cs_checkpoints) disagrees with the log: {problem}; "
            "it was changed around the store (a run resumed from it may have recorded a "
            "wrong digest); delete that row and resume folds the whole log",
        )
