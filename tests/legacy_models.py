"""The legacy schema as users have it: SQLModel tables with client-made UUIDv7 keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import uuid_utils.compat as uuid_compat
from sqlmodel import Field, SQLModel


def uuid7() -> uuid.UUID:
    return uuid_compat.uuid7()


class ClusteringResult(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    model_name: str
    algorithm: str
    n_clusters: int
    n_embeddings: int
    notes: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class EmbeddingCluster(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    embedding_id: uuid.UUID
    clustering_result_id: uuid.UUID = Field(foreign_key="clusteringresult.id")
    cluster_id: uuid.UUID
