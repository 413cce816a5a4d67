"""The reprogramming index: one continuous axis from blood-like to T3-like neutrophils.

The index of a cell is ``(mean(up scores) - mean(down scores) - loc) / scale`` where the scores are
signature scores of the same method (by default the scanpy mean-minus-control score of the
``T3_proxy`` and ``blood_like`` signatures). ``loc`` and ``scale`` are fitted once on the reference
neutrophils (their 1st percentile and the 1st-99th percentile span), so 0 is about the most
blood-like and 1 about the most T3-like reference neutrophil. The fitted axis is stored with the
atlas (``uns["reprogramming_axis"]``) and applied unchanged to query data sets, so an index means the
same thing in the atlas and in every query.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..errors import AtlasError

__all__ = ["ReprogrammingAxis", "apply_reprogramming_axis", "fit_reprogramming_axis"]


@dataclass(frozen=True)
class ReprogrammingAxis:
    """A fitted blood-like -> T3-like axis over signature score columns."""

    up: tuple[str, ...] = ("T3_proxy",)
    down: tuple[str, ...] = ("blood_like",)
    loc: float = 0.0
    scale: float = 1.0
    method: str = "scanpy"  # scoring method the scores came from
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON/HDF5-friendly dict (for ``uns``)."""
        d = asdict(self)
        d["up"], d["down"] = list(self.up), list(self.down)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ReprogrammingAxis:
        """Read back what :meth:`to_dict` wrote (also from an AnnData ``uns`` entry)."""
        try:
            return cls(
                up=tuple(str(x) for x in np.atleast_1d(d["up"])),
                down=tuple(str(x) for x in np.atleast_1d(d["down"])),
                loc=float(d["loc"]),
                scale=float(d["scale"]),
                method=str(d.get("method", "scanpy")),
            )
        except KeyError as e:
            raise AtlasError(
                f"reprogramming axis is missing the field {e}; rebuild the atlas with this atlas version"
            ) from e


def _raw_axis(scores: pd.DataFrame, up: tuple[str, ...], down: tuple[str, ...]) -> np.ndarray:
    missing = [c for c in (*up, *down) if c not in scores.columns]
    if missing:
        raise AtlasError(
            f"reprogramming index needs the score column(s) {missing}; score these signatures first "
            f"(atlas score --signatures {','.join(missing)}) or change analysis.reprogramming_up/down"
        )
    if not up:
        raise AtlasError("reprogramming index needs at least one 'up' (T3-like) signature")
    value = scores[list(up)].to_numpy(dtype=np.float64).mean(axis=1)
    if down:
        value = value - scores[list(down)].to_numpy(dtype=np.float64).mean(axis=1)
    return value


def fit_reprogramming_axis(
    scores: pd.DataFrame,
    *,
    up: tuple[str, ...] | list[str] = ("T3_proxy",),
    down: tuple[str, ...] | list[str] = ("blood_like",),
    method: str = "scanpy",
    quantiles: tuple[float, float] = (0.01, 0.99),
) -> ReprogrammingAxis:
    """Fit ``loc``/``scale`` on reference neutrophils' scores (rows = neutrophils only)."""
    up, down = tuple(up), tuple(down)
    raw = _raw_axis(scores, up, down)
    raw = raw[np.isfinite(raw)]
    if raw.size < 2:
        raise AtlasError("cannot fit the reprogramming index: fewer than 2 neutrophils with finite scores")
    lo, hi = np.quantile(raw, quantiles)
    scale = float(hi - lo) if hi > lo else float(np.std(raw) or 1.0)
    return ReprogrammingAxis(up=up, down=down, loc=float(lo), scale=scale, method=method)


def apply_reprogramming_axis(scores: pd.DataFrame, axis: ReprogrammingAxis | dict) -> np.ndarray:
    """The reprogramming index of every row of ``scores`` on a fitted axis."""
    if isinstance(axis, dict):
        axis = ReprogrammingAxis.from_dict(axis)
    return (_raw_axis(scores, axis.up, axis.down) - axis.loc) / axis.scale
