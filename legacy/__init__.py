"""Moving in from a legacy SQLModel database (``clusteringresult`` + ``embeddingcluster``)."""

from .importer import ImportItem, ImportReport, import_legacy, plan
from .source import LegacyImportConflictError, LegacyResult, LegacySource, LegacySourceError

__all__ = [
    "ImportItem",
    "ImportReport",
    "LegacyImportConflictError",
    "LegacyResult",
    "LegacySource",
    "LegacySourceError",
    "import_legacy",
    "plan",
]
