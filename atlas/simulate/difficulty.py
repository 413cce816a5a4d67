"""Difficulty settings of the simulator: weaker markers, shallower neutrophils, soup, confounders.

The simulator's marker strengths, UMI depths and programmes were chosen by the same hands as the
pipeline's thresholds. These knobs make cohorts harder, so a robustness benchmark can check that
the pipeline does not depend on them. At their defaults every knob reproduces the default
simulator exactly (same bytes for the same seed: a knob at its default draws nothing). Draws a
knob needs come from their own random streams, so the rest of the simulated world is the same as
with the defaults.

* ``marker_strength`` (default 1.0): scales the log-fold of every cell-type marker over a typical
  well-expressed gene of its type (the type's 90th-percentile gene; markers sit near its 99.7th
  percentile, about 3.5 natural-log units higher): 0.5 halves that log-fold, so markers are about
  6-fold less expressed and fewer are detected in shallow cells (never below their level in the
  types they do not mark).
* ``marker_contrast`` (default 1.0): scales how much lower the markers of a type are in the other
  types (in log space): 0.6 brings the other types 40% of the way up to the marking type's level,
  so markers are less specific. With ``marker_strength`` it is a separate knob: strength sets how
  well a type's markers are detected, contrast how exclusive they are.
* ``neutrophil_umi_droplet`` (default None = the platforms' 450 (10x 3') and 350 (10x 5')):
  median UMIs of neutrophils on droplet platforms; ``neutrophil_umi_scale`` (default 1.0)
  multiplies the neutrophil median of the plate and well platforms (BD Rhapsody 1,500, Seq-Well
  1,000, Smart-seq2 2,000).
* ``ambient_fraction`` (0-0.2, default 0): share of each cell's UMIs drawn from its sample's
  ambient profile, as in SoupX's model (observed = (1 - rho) * cell + rho * soup): the soup is the
  sample's mean expression weighted by each cell's UMIs, so it is dominated by abundant, RNA-rich
  cells. The cell's own UMIs are reduced so its expected total is unchanged.
* ``monocyte_neutrophil_overlap`` (0-1, default 0): monocytes express the neutrophil genes S100A8,
  S100A9, FCN1 and MNDA at this fraction of the neutrophil level (relative expression), and LYZ,
  CSF3R and FPR1 at half of it (unless they are higher already).
* ``hypoxic_tumour`` (0-1, default 0): tumour epithelial cells express the hypoxia/glycolysis
  programme (HALLMARK_HYPOXIA and HALLMARK_GLYCOLYSIS genes and VEGFA) with this share of the T3
  programme's log-fold (genes the T3 programme leaves alone get this share of a 1.5 log-fold).
* ``vegfa_macrophages`` (0-1, default 0): share of macrophages that are SPP1/VEGFA-high
  pro-angiogenic TAMs: SPP1 and VEGFA at marker level plus the hypoxia/angiogenesis genes
  (HALLMARK_ANGIOGENESIS and the hypoxia genes of the T3 programme) with the T3 programme's
  log-fold. Their truth cell type stays ``macrophage``.
* ``t3_proxy_overlap`` (0-1, default 1.0): share of the registry's ``T3_proxy`` genes that the true
  T3 programme moves; the others are left alone and as many other genes (in no state signature, no
  marker) take their place, so the shipped proxy only partly matches the real T3 programme. T3 truth
  (``truth_state``) is still the simulated state; ``truth/genes.csv`` (``t3_up``) lists the genes.
* ``batch_strength`` (default 1.0): scales the gene-wise per-study batch effects (log-normal sd
  0.3-0.5 per study by default).
* ``obs_style`` (default None = the study templates' names): ``"foreign"`` gives every data set the
  obs columns ``donor``, ``library``, ``site``, ``tech`` and ``tumor_type`` (patient, sample, tissue,
  platform, cancer type); the generated ingest.yaml maps them with ``obs_columns`` as usual.

Presets (:data:`DIFFICULTY_PRESETS`, :meth:`Difficulty.preset`): ``default``; ``weak_markers``
(markers 0.5, contrast 0.6, droplet neutrophils 300 UMIs, ambient 0.05); ``confounded`` (monocyte
overlap 0.6, hypoxic tumour 0.6, VEGFA macrophages 0.3, T3 proxy overlap 0.5, batch 2, foreign
obs names); ``hard`` (all of these, with ambient 0.10).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from ..core.errors import ConfigError
from ..core.settings import StrictModel


class Difficulty(StrictModel):
    """Difficulty knobs of the simulator (see :mod:`atlas.simulate.difficulty`); defaults change nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    marker_strength: float = Field(1.0, gt=0, le=3, description="scales the log-fold of every cell-type marker")
    marker_contrast: float = Field(
        1.0, ge=0, le=3, description="scales how much lower a type's markers are in the other types"
    )
    neutrophil_umi_droplet: float | None = Field(
        None, ge=20, le=20_000, description="median neutrophil UMIs on droplet platforms (None: 450 / 350)"
    )
    neutrophil_umi_scale: float = Field(
        1.0, gt=0, le=10, description="multiplies the neutrophil median UMIs of non-droplet platforms"
    )
    ambient_fraction: float = Field(0.0, ge=0, le=0.2, description="share of UMIs from the sample's soup")
    monocyte_neutrophil_overlap: float = Field(
        0.0, ge=0, le=1, description="monocyte level of S100A8/S100A9/FCN1/MNDA relative to neutrophils"
    )
    hypoxic_tumour: float = Field(
        0.0, ge=0, le=1, description="tumour cells' hypoxia/glycolysis log-fold relative to the T3 programme"
    )
    vegfa_macrophages: float = Field(0.0, ge=0, le=1, description="share of SPP1/VEGFA-high macrophages")
    t3_proxy_overlap: float = Field(1.0, ge=0, le=1, description="share of T3_proxy genes in the true T3 programme")
    batch_strength: float = Field(1.0, ge=0, le=5, description="scales the per-study gene-wise batch effects")
    obs_style: Literal["foreign"] | None = Field(
        None, description="foreign: every data set uses the obs columns donor/library/site/tech/tumor_type"
    )

    @property
    def is_default(self) -> bool:
        """True when every knob is at its default (the simulator's original output)."""
        return self == Difficulty()

    def changed(self) -> dict[str, Any]:
        """The knobs that differ from their defaults."""
        return self.model_dump(exclude_defaults=True)

    @classmethod
    def preset(cls, name: str) -> Difficulty:
        """A named preset (see :data:`DIFFICULTY_PRESETS`).

        Parameters
        ----------
        name
            ``default``, ``weak_markers``, ``confounded`` or ``hard``.

        Returns
        -------
        Difficulty
        """
        try:
            return DIFFICULTY_PRESETS[name]
        except KeyError:
            raise ConfigError(
                f"unknown simulator difficulty preset {name!r}; choose one of {', '.join(DIFFICULTY_PRESETS)} "
                f"or give a mapping of knobs ({', '.join(cls.model_fields)})"
            ) from None

    @classmethod
    def resolve(cls, value: Difficulty | str | dict | None, source: str = "difficulty") -> Difficulty:
        """A :class:`Difficulty` from None (default), a preset name, a mapping of knobs or a Difficulty.

        Parameters
        ----------
        value
            What the user gave.
        source
            Where it came from, for error messages.

        Returns
        -------
        Difficulty

        Raises
        ------
        ConfigError
            Unknown preset, unknown knob or a value out of range.
        """
        if value is None:
            return cls()
        if isinstance(value, Difficulty):
            return value
        if isinstance(value, str):
            return cls.preset(value)
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.model_fields))
            if unknown:
                raise ConfigError(
                    f"{source}: unknown difficulty knob(s) {', '.join(unknown)}; the knobs are "
                    f"{', '.join(cls.model_fields)} (or give a preset name: {', '.join(DIFFICULTY_PRESETS)})"
                )
            try:
                return cls.model_validate(value)
            except ValidationError as e:
                msgs = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ConfigError(f"{source}: invalid difficulty ({msgs})") from None
        raise ConfigError(
            f"{source}: give the difficulty as a preset name, a mapping of knobs or a Difficulty, "
            f"not {type(value).__name__}"
        )


_WEAK = {"marker_strength": 0.5, "marker_contrast": 0.6, "neutrophil_umi_droplet": 300.0, "ambient_fraction": 0.05}
_CONFOUNDED = {"monocyte_neutrophil_overlap": 0.6, "hypoxic_tumour": 0.6, "vegfa_macrophages": 0.3,
               "t3_proxy_overlap": 0.5, "batch_strength": 2.0, "obs_style": "foreign"}  # fmt: skip

#: Named difficulty presets.
DIFFICULTY_PRESETS: dict[str, Difficulty] = {
    "default": Difficulty(),
    "weak_markers": Difficulty(**_WEAK),
    "confounded": Difficulty(**_CONFOUNDED),
    "hard": Difficulty(**{**_WEAK, **_CONFOUNDED, "ambient_fraction": 0.10}),
}
