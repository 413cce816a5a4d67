"""Names of :mod:`atlas.query`, imported on first use (read by lazy_loader.attach_stub and type checkers)."""

from .reference import Reference, load_reference
from .settings import QuerySettings
from .stage import QueryResult, map_query
