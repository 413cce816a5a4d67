"""The one model of scoring settings: ``atlas score``, the pipeline's ``score`` section, the signatures
``analyse`` scores itself and the keyword arguments of :func:`atlas.score.score_store` all go through
:class:`ScoreConfig` (YAML field names are its field names)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..core.settings import StrictModel
from ..core.storage import PathOrURL

DEFAULT_SIGNATURES = [
    "T3_proxy", "blood_like", "HALLMARK_HYPOXIA", "HALLMARK_GLYCOLYSIS", "HALLMARK_ANGIOGENESIS",
    "Zilionis_hN1", "Zilionis_hN2", "Zilionis_hN3", "Zilionis_hN4", "Zilionis_hN5",
    "SchulteSchrepping_immature", "neutrophil_identity_JITC2022", "Wu_HLA_DR_CD74", "Wu_IFIT1_ISG15",
]


class ScoreConfig(StrictModel):
    """How signatures are scored on a store (``atlas score``, the pipeline's score stage, ``analyse``).

    The lower bounds are the scorer's own; the CLI's options keep sensible minimums for stores.
    """

    signatures: list[str] | PathOrURL = Field(
        default_factory=lambda: list(DEFAULT_SIGNATURES),
        description="registry names (see `atlas signatures list`) or a GMT/YAML file of gene sets",
    )
    method: Literal["scanpy", "aucell", "ucell", "mean"] = Field(
        "scanpy", description="scanpy = mean minus control genes (sc.tl.score_genes); aucell/ucell = rank based"
    )
    backend: Literal["auto", "cpu", "gpu"] = Field("auto", description="gpu needs cupy and a CUDA device")
    chunk_size: int = Field(50_000, ge=1, description="cells per chunk streamed from the store")
    normalize: Literal["auto"] | bool = Field(
        "auto", description="counts per 10k + log1p fused into the pass; auto = when the matrix holds counts"
    )
    ctrl_size: int = Field(50, ge=1)
    n_bins: int = Field(25, ge=1)
    max_rank: int = Field(1500, ge=1, description="UCell max rank / AUCell top genes")
    random_state: int = 0

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`atlas.score.score_store` (every setting but the signatures)."""
        return {"method": self.method, "ctrl_size": self.ctrl_size, "n_bins": self.n_bins,
                "random_state": self.random_state, "normalize": self.normalize, "backend": self.backend,
                "chunk_size": self.chunk_size, "max_rank": self.max_rank}  # fmt: skip

    def signature_arg(self) -> list[str] | str:
        """``signatures`` as :func:`atlas.score.score_store` takes them (a file as a path string)."""
        return list(self.signatures) if isinstance(self.signatures, list) else str(self.signatures)
