"""Names of :mod:`atlas.score`, imported on first use (read by lazy_loader.attach_stub and type checkers)."""

from .adata import score_signatures
from .gene_sets import (
    GeneSet,
    read_gene_set_yaml,
    read_gmt,
    resolve_gene_sets,
)
from .matrix import score_matrix
from .stage import (
    export_signatures,
    list_signatures,
    score_store,
    show_signature,
)
