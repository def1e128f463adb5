"""``which``: where one embedding landed in every completed run, from the read models.

    which(store, embedding_id)           # every completed run, oldest first
    which(store, embedding_id, model=M)  # only runs of model M

The answer comes from the ``embeddingcluster`` view joined with ``clusteringresult`` (the
same SQL a user can run), so it reflects the read models as far as they are caught up.
With the lookup index switched on (``set_lookup_index``) it is an index lookup, and so is
``WHERE id = ?`` on the view; without, a scan of every projected assignment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import Connection, Uuid, bindparam, func, inspect, null, select, text

from clusterstore.eventstore.errors import InputError
from clusterstore.eventstore.ids import as_ids
from clusterstore.eventstore.store import EventStore

from . import schema
from .base import current_generation
from .embeddingcluster import EmbeddingClusterProjection
from .lookup_index import (
    IDS_SETTING,
    SETTING,
    create_lookup_index,
    drop_lookup_index,
    lookup_index_enabled,
    stored_ids_generation,
    write_setting,
)
from .runner import Runner, ensure_tables, holding


@dataclass(frozen=True)
class Placement:
    run_id: UUID
    model: str | None
    started_at: datetime | None
    cluster: int
    cluster_id: UUID | None  # None for noise (cluster -1)
    distance: float | None

    def to_json(self) -> dict[str, Any]:
        started = self.started_at
        if started is not None:
            started = started.replace(tzinfo=UTC) if started.tzinfo is None else started
        return {
            "run_id": str(self.run_id),
            "model": self.model,
            "started_at": None
            if started is None
            else started.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z",
            "cluster": self.cluster,
            "cluster_id": None if self.cluster_id is None else str(self.cluster_id),
            "distance": self.distance,
        }


@dataclass(frozen=True)
class WhichResult:
    embedding_id: UUID
    placements: list[Placement]
    indexed: bool  # answered from the lookup index (else a scan)
    built: bool  # the read models exist at all

    def to_json(self) -> dict[str, Any]:
        return {
            "embedding_id": str(self.embedding_id),
            "indexed": self.indexed,
            "runs": [p.to_json() for p in self.placements],
        }


_WHICH = """SELECT e.run_id, r.model, r.started_at, e.cluster, e.cluster_id, e.distance
FROM embeddingcluster AS e JOIN clusteringresult AS r ON r.run_id = e.run_id
WHERE e.embedding_id = :eid{model}
ORDER BY r.started_at, e.run_id, e.seq"""


def parse_embedding_id(value: str | UUID | bytes | np.void) -> UUID:
    """One embedding id in any of the store's forms: a UUID, its text, or 16 bytes (an
    element of the ``V16`` arrays ``labels`` returns)."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        value = value.strip()
    values: list[Any] = [value]
    try:
        (one,) = as_ids(values, "embedding id")
    except InputError as e:
        raise InputError(f"{value!r} is not an embedding id (a UUID)") from e
    return UUID(bytes=bytes(one))


def which(store: EventStore, embedding_id: str | UUID, *, model: str | None = None) -> WhichResult:
    """The cluster, cluster_id and distance of ``embedding_id`` in every completed run the
    read models hold (oldest first), optionally only runs of ``model``."""
    eid = parse_embedding_id(embedding_id)
    with store.transaction() as conn:
        # tables looked up by name (listing them all is a heavy catalog query on
        # PostgreSQL, ~25 ms), then one statement for both facts: every round trip counts
        insp = inspect(conn)
        if not insp.has_table(schema.checkpoints.name):
            return WhichResult(eid, [], False, False)
        built, indexed = _state(conn, settings=insp.has_table(schema.settings.name))
        if not built:
            return WhichResult(eid, [], False, False)
        sql = text(_WHICH.format(model=" AND r.model = :model" if model is not None else ""))
        sql = sql.bindparams(bindparam("eid", type_=Uuid()))
        params: dict[str, Any] = {"eid": eid}
        if model is not None:
            params["model"] = model
        rows = conn.execute(sql, params).all()
    placements = [
        Placement(
            run_id=_uuid(r[0]),
            model=r[1],
            started_at=_datetime(r[2]),
            cluster=int(r[3]),
            cluster_id=None if r[4] is None else _uuid(r[4]),
            distance=None if r[5] is None else float(r[5]),
        )
        for r in rows
    ]
    return WhichResult(eid, placements, indexed, True)


def _state(conn: Connection, *, settings: bool) -> tuple[bool, bool]:
    """Whether both read models ``which`` joins have been built, and whether the lookup
    option is on (``settings``: whether its table exists), in one statement."""
    t, s = schema.checkpoints, schema.settings
    wanted = (EmbeddingClusterProjection.name, "clusteringresult")
    built = select(func.count()).where(t.c.name.in_(wanted)).scalar_subquery()
    option = select(s.c.value).where(s.c.name == SETTING).scalar_subquery()
    found, value = conn.execute(select(built, option if settings else null())).one()
    return found == len(wanted), value == "on"


def set_lookup_index(store: EventStore, on: bool) -> None:
    """Switch the lookup indexes on or off, holding the read model's runner lock (so no
    catch-up applies rows meanwhile; refused while a follower runs, like a rebuild).

    On: the embedding-id and id indexes are built on the current generation when its rows
    already store their ids (``lookup_index``), else the read model is rebuilt with them
    (a replay of the log, ``projections rebuild``'s cost). Off: both indexes are dropped
    and the view derives ``id`` again (the same values)."""
    with store.connection() as conn:
        ensure_tables(store, conn)
        projection = EmbeddingClusterProjection(store)
        with holding(Runner(store, projection, conn)) as runner:
            with store.transaction(write=True, conn=conn) as c:
                runner.lock.check(c)
                write_setting(c, SETTING, "on" if on else "off")
                generation = current_generation(c, projection.name)
                ready = generation is None or stored_ids_generation(c) == generation
                if generation is not None and not on:
                    write_setting(c, IDS_SETTING, None)
                    drop_lookup_index(c, generation)
                    projection.publish(c, generation)
                elif generation is not None and ready:
                    create_lookup_index(store, c, generation)
            if on and not ready:
                runner.rebuild()
                runner.catch_up()


def lookup_index_state(store: EventStore) -> bool:
    with store.transaction() as conn:
        return lookup_index_enabled(conn)


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
