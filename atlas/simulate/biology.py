"""Ground-truth biology of the simulator: cell types, neutrophil states, reprogramming, cancer types.

Everything here is a parameter of the simulated world, not an estimate. The model:

* Each cell type has a base expression profile (log weights over genes): a log-normal baseline
  shared by all types, type-specific noise, ~150 random up- and ~50 down-regulated genes, and
  strongly expressed markers. Mitochondrial and ribosomal genes take fixed shares of the counts.
* Neutrophils carry a reprogramming pseudotime ``pt`` in [0, 1]. The T3 programme (the registry's
  ``T3_proxy`` genes, 40% of the hallmark hypoxia/glycolysis/angiogenesis genes (about 4.5-fold), and loss of the
  blood-like genes CXCR2, SELL, FCGR3B, CXCR1, S100A12, ...) is switched on by the logistic
  ``s(pt) = 1 / (1 + exp(-(pt - 0.55) / 0.07))`` plus a gradual drift along the whole trajectory,
  ``w_T3(pt) = s + 0.5 * pt * (1 - s)`` (so the pseudotime is visible in expression before the
  switch, as the progressive T1 -> T2 -> T3 shift of Ng et al.); the blood-like programme has weight
  ``1 - w_T3``. Cells are labelled T3 exactly when ``pt >= 0.65`` (on the main trajectory).
  Immature cells sit at pt < 0.08, interferon and antigen-presenting cells are side states at
  pt 0.15-0.5; mature cells of tumours spread up to 0.62, so intermediate cells exist.
* Every neutrophil also ages along the trajectory: a tissue-ageing programme gains weight ``pt``
  linearly. It moves Xie et al. 2020's maturation and ageing genes (lifted to a high level) and, as
  real maturation trajectories shift hundreds of genes, 300 further genes (2/3 up, 1/3 down, about
  7-fold at ``pt = 1``), all chosen among genes that no other programme, marker or
  :data:`STATE_SIGNATURES` signature uses, so it does not blur the states. The pseudotime is thus
  written into expression over its whole range (within the mature and side states too), not only by
  the T3 switch. Without it (simulator version 1) the pseudotime of mature and side-state cells was a
  label the expression barely carried: a kNN regression of the truth on the neutrophil latent reached
  Spearman 0.75 at best; with it, 0.84.
* Difficulty knobs (:mod:`atlas.simulate.difficulty`) change this world for robustness benchmarks:
  marker log-folds and contrast, neutrophil UMIs, ambient RNA, neutrophil genes in monocytes, a
  hypoxic tumour programme, SPP1/VEGFA-high macrophages (an extra macrophage profile), a T3
  programme that only partly uses the ``T3_proxy`` genes, and stronger study batch effects. At their
  defaults nothing changes.
* Each patient draws a T3 fraction ``f ~ Beta(m * 25, (1 - m) * 25)`` around the mean ``m`` of its
  cancer type; tumour neutrophils are T3 with probability ``f``, adjacent-normal ones with
  ``0.15 * f``, blood neutrophils never.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..catalogue.signatures import load_registry
from .difficulty import Difficulty
from .genes import MT_GENES, GeneTable

CELL_TYPES: tuple[str, ...] = (
    "neutrophil", "monocyte", "macrophage", "T", "B", "NK", "tumour_epithelial", "fibroblast", "endothelial",
)  # fmt: skip
NEUTROPHIL = CELL_TYPES.index("neutrophil")

MARKERS: dict[str, tuple[str, ...]] = {
    "neutrophil": (
        "CSF3R", "FCGR3B", "CXCR2", "CXCR1", "S100A8", "S100A9", "S100A12", "FPR1", "MNDA", "G0S2",
        "SOD2", "NAMPT", "AQP9", "PROK2", "CMTM2", "MME", "SELL", "TXNIP",
    ),
    "monocyte": ("CD14", "LYZ", "CSF1R", "VCAN", "FCN1", "S100A4"),
    "macrophage": ("C1QA", "C1QB", "C1QC", "APOE", "CD68", "CD163", "MRC1", "CSF1R"),
    "T": ("CD3E", "CD3D", "CD2", "IL7R", "TRAC", "CD3G"),
    "B": ("MS4A1", "CD79A", "CD19", "CD79B", "BANK1"),
    "NK": ("NKG7", "GNLY", "KLRD1", "PRF1", "GZMB"),
    "tumour_epithelial": ("EPCAM", "KRT8", "KRT18", "KRT19", "KRT7"),
    "fibroblast": ("COL1A1", "COL1A2", "DCN", "LUM", "COL3A1"),
    "endothelial": ("PECAM1", "VWF", "CDH5", "PLVAP", "CLDN5"),
}  # fmt: skip

STATES: tuple[str, ...] = ("immature", "mature", "interferon", "antigen_presenting", "T3")
#: Programmes whose per-cell weights modulate neutrophil expression (order of the weight columns).
PROGRAMS: tuple[str, ...] = ("blood", "T3", "immature", "interferon", "antigen_presenting", "ageing")
AGEING = PROGRAMS.index("ageing")
T3_MIDPOINT, T3_SCALE, T3_THRESHOLD = 0.55, 0.07, 0.65
#: Registry signatures that define neutrophil states (the analysis' defaults and the hallmarks scored beside
#: them): the ageing programme leaves their genes alone, so it does not blur the states.
STATE_SIGNATURES: tuple[str, ...] = (
    "T3_proxy", "blood_like", "SchulteSchrepping_immature", "Wu_IFIT1_ISG15", "Wu_HLA_DR_CD74",
    "HALLMARK_HYPOXIA", "HALLMARK_GLYCOLYSIS", "HALLMARK_ANGIOGENESIS",
)  # fmt: skip
AGEING_DRIFT_GENES = 300  # genes besides Xie et al.'s that the ageing programme moves
T3_DRIFT = 0.5  # share of the T3 programme gained linearly along the pseudotime, besides the switch

IMMATURE_GENES = ("LTF", "LCN2", "CAMP", "MMP8", "CEACAM8", "OLFM4", "CRISP3", "PGLYRP1", "CD24", "BPI",
                  "HP", "TFF3", "ARG1", "CEACAM6", "CHI3L1")  # fmt: skip
INTERFERON_GENES = ("ISG15", "IFIT1", "IFIT2", "IFIT3", "RSAD2", "MX1", "IFI6", "IFITM3", "XAF1", "OASL",
                    "HERC5", "IRF7", "IFI44L", "OAS2", "STAT1", "LY6E", "CMPK2", "GBP1", "GBP5", "CD274")  # fmt: skip
AP_CORE_GENES = ("HLA-DRA", "HLA-DRB1", "CD74", "HLA-DPA1", "HLA-DPB1", "HLA-DQA1", "HLA-DQB1", "HLA-DMA",
                 "HLA-DMB")  # fmt: skip
BLOOD_GENES = ("S100A12", "CXCR2", "SELL", "TXNIP", "CXCR1", "CSF3R", "FCGR3B", "PTGS2")

#: Mean T3 fraction among tumour neutrophils, and the long name some data sets use.
CANCER_TYPES: dict[str, tuple[float, str]] = {
    "PDAC": (0.45, "pancreatic ductal adenocarcinoma"),
    "HCC": (0.35, "hepatocellular carcinoma"),
    "NSCLC": (0.25, "non-small cell lung cancer"),
    "CRC": (0.15, "colorectal cancer"),
    "BRCA": (0.08, "breast cancer"),
    "melanoma": (0.03, "cutaneous melanoma"),
}
T3_CONCENTRATION = 25.0  # Beta concentration of patient T3 fractions around the cancer-type mean
ADJACENT_T3_FACTOR = 0.15

#: Expected cell-type shares per tissue (order of CELL_TYPES); patients vary around them.
COMPOSITION: dict[str, tuple[float, ...]] = {
    "tumour": (0.16, 0.06, 0.12, 0.22, 0.06, 0.05, 0.18, 0.09, 0.06),
    "adjacent_normal": (0.10, 0.06, 0.12, 0.20, 0.06, 0.05, 0.24, 0.10, 0.07),
    "blood": (0.35, 0.15, 0.0, 0.30, 0.10, 0.10, 0.0, 0.0, 0.0),
}
#: Non-T3 neutrophil state probabilities per tissue (immature, mature, interferon, antigen_presenting).
STATE_MIX: dict[str, tuple[float, float, float, float]] = {
    "tumour": (0.12, 0.58, 0.17, 0.13),
    "adjacent_normal": (0.12, 0.70, 0.12, 0.06),
    "blood": (0.08, 0.82, 0.08, 0.02),
}


@dataclass(frozen=True)
class Platform:
    """Capture characteristics of a sequencing platform."""

    droplet: bool
    neutrophil_capture: float  # multiplies the neutrophil share of a sample
    neutrophil_umi: float  # median UMIs of a neutrophil
    umi_factor: float  # multiplies the median UMIs of the other cell types


PLATFORMS: dict[str, Platform] = {
    "10x_3p": Platform(True, 0.15, 450.0, 1.0),
    "10x_5p": Platform(True, 0.12, 350.0, 0.9),
    "BD_Rhapsody": Platform(False, 1.0, 1500.0, 0.8),
    "SeqWell": Platform(False, 0.8, 1000.0, 0.6),
    "Smart-seq2": Platform(False, 0.9, 2000.0, 1.2),
}
#: Median UMIs of the non-neutrophil types (before the platform factor).
TYPE_UMI = {"monocyte": 4500.0, "macrophage": 5500.0, "T": 2500.0, "B": 2800.0, "NK": 2600.0,
            "tumour_epithelial": 6000.0, "fibroblast": 5000.0, "endothelial": 4500.0}  # fmt: skip
MT_FRACTION = (0.025, 0.05, 0.05, 0.04, 0.04, 0.04, 0.07, 0.05, 0.05)
RIBO_FRACTION = (0.05, 0.12, 0.10, 0.25, 0.25, 0.20, 0.12, 0.10, 0.12)
LIBRARY_SD = 0.45  # log-normal sd of cell library sizes within a type
DAMAGED_FRACTION, LOW_QUALITY_FRACTION = 0.04, 0.02

BASELINE_SD = 1.8  # log-normal sd of the shared baseline across genes
N_SUPPORT = 3500  # genes per cell type sampled gene by gene (negative binomial); the rest as background


def state_gene_sets() -> dict[str, list[str]]:
    """Genes of each neutrophil programme (before filtering to the gene universe)."""
    reg = load_registry()
    hallmark = []
    for name in ("HALLMARK_HYPOXIA", "HALLMARK_GLYCOLYSIS", "HALLMARK_ANGIOGENESIS"):
        hallmark.extend(g for g in reg[name].genes if g not in hallmark)
    return {
        "blood": list(dict.fromkeys(BLOOD_GENES + reg["blood_like"].genes)),
        "T3_proxy": list(reg["T3_proxy"].genes),
        "T3_optional": list(reg["T3_proxy"].optional_genes),
        "hallmark": hallmark,
        "immature": list(IMMATURE_GENES),
        "interferon": list(dict.fromkeys(INTERFERON_GENES + reg["Zilionis_hN2"].genes[:20])),
        "antigen_presenting": list(AP_CORE_GENES),
        "antigen_presenting_extra": list(reg["Zilionis_hN4"].genes[:25]),
        "ageing": list(dict.fromkeys(reg["Xie_maturation"].genes + reg["Xie_aging"].genes)),
    }


def _state_signature_genes(index: dict[str, int]) -> np.ndarray:
    """Universe indices of the genes of :data:`STATE_SIGNATURES`."""
    reg = load_registry()
    return _idx([g for n in STATE_SIGNATURES for g in reg[n].genes], index)


def extra_genes() -> tuple[str, ...]:
    """Markers and state genes the gene universe must contain."""
    out = [g for genes in MARKERS.values() for g in genes]
    for genes in state_gene_sets().values():
        out.extend(genes)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Profiles:
    """Expression model shared by all data sets.

    Attributes
    ----------
    logw
        (n_types, n_genes) log expression weights of each cell type.
    support
        (n_types, n_support) sorted gene indices sampled gene by gene for each type.
    effects
        (n_programs, n_support) log-fold effects of the neutrophil programmes on the neutrophil support.
    theta
        (n_genes,) negative-binomial inverse dispersion of each gene.
    is_mt
        (n_genes,) mitochondrial genes.
    t3_genes
        Universe indices of the genes up in T3 (for reports and tests).
    profile_type
        (n_profiles,) cell type of each row of ``logw``: the types first, then extra profiles of a type.
    t3_proxy_used, t3_replacements
        Universe indices of the ``T3_proxy`` genes the T3 programme moves, and of the genes that replace
        the others (``t3_proxy_overlap`` < 1).
    """

    logw: np.ndarray
    support: np.ndarray
    effects: np.ndarray
    theta: np.ndarray
    is_mt: np.ndarray
    t3_genes: np.ndarray
    profile_type: np.ndarray
    t3_proxy_used: np.ndarray
    t3_replacements: np.ndarray


def _idx(names, index: dict[str, int]) -> np.ndarray:
    return np.array(sorted({index[g] for g in names if g in index}), dtype=np.int64)


#: Neutrophil genes monocytes express with ``monocyte_neutrophil_overlap`` (full share, half share).
MONOCYTE_OVERLAP_GENES = ("S100A8", "S100A9", "FCN1", "MNDA")
MONOCYTE_OVERLAP_HALF_GENES = ("LYZ", "CSF3R", "FPR1")
MARKER_REFERENCE_QUANTILE = 0.9  # marker_strength scales the markers' log-fold over this quantile of the type
HALLMARK_FOLD = 1.5  # log-fold of the hypoxia genes the T3 programme leaves alone (its mean hallmark effect)
TAM_GENES = ("SPP1", "VEGFA")  # raised to marker level in SPP1/VEGFA-high macrophages


def _marker_contrast(logw: np.ndarray, index: dict[str, int], contrast: float) -> None:
    """Bring each marker's level in the types it does not mark toward its marking type's level (in place)."""
    for g in sorted({g for gs in MARKERS.values() for g in gs if g in index}):
        owners = [t for t, ct in enumerate(CELL_TYPES) if g in MARKERS[ct]]
        j = index[g]
        own = logw[owners, j].max()
        others = np.setdiff1d(np.arange(len(CELL_TYPES)), owners)
        low = logw[others, j]
        logw[others, j] = np.where(low < own, own - contrast * (own - low), low)


def _swap_proxy_genes(drng: np.random.Generator, eff: np.ndarray, proxy: np.ndarray, blood: np.ndarray,
                      pool: np.ndarray, overlap: float, lift) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Keep a share ``overlap`` of the T3_proxy genes in the T3 programme; other genes replace the rest.

    Returns the kept proxy genes and their replacements (universe indices); ``eff`` is changed in place.
    """
    n_keep = int(round(overlap * proxy.size))
    keep = np.sort(drng.choice(proxy, size=n_keep, replace=False))
    dropped = np.setdiff1d(proxy, keep)
    new = np.sort(drng.choice(pool, size=min(dropped.size, pool.size), replace=False))
    eff[1, np.setdiff1d(dropped, blood)] = 0.0
    eff[1, new] = lift(new)
    return keep, new


def _t3_folds(ids: np.ndarray, eff_t3: np.ndarray) -> np.ndarray:
    """The T3 programme's log-fold of each gene (:data:`HALLMARK_FOLD` where it is not up in T3)."""
    return np.where(eff_t3[ids] > 0, eff_t3[ids], HALLMARK_FOLD)


def _confounders(d: Difficulty, logw: np.ndarray, eff_t3: np.ndarray, index: dict[str, int],
                 plain: np.ndarray, special_shares) -> tuple[dict[int, np.ndarray], list]:  # fmt: skip
    """Apply the confounding knobs to the type profiles (in place).

    Returns the genes each type's support must hold, and extra (type, log weights) profiles.
    """
    must: dict[int, np.ndarray] = {}
    rows: list = []
    reg = None
    if d.hypoxic_tumour > 0 or d.vegfa_macrophages > 0:
        reg = load_registry()
    if d.monocyte_neutrophil_overlap > 0:
        mono = CELL_TYPES.index("monocyte")
        z = np.log(np.exp(logw[mono]).sum()) - np.log(np.exp(logw[NEUTROPHIL]).sum())  # same relative level
        for names, share in ((MONOCYTE_OVERLAP_GENES, 1.0), (MONOCYTE_OVERLAP_HALF_GENES, 0.5)):
            ids = _idx(names, index)
            target = logw[NEUTROPHIL, ids] + z + np.log(share * d.monocyte_neutrophil_overlap)
            logw[mono, ids] = np.maximum(logw[mono, ids], target)
            must[mono] = np.union1d(must.get(mono, np.zeros(0, dtype=np.int64)), ids)
        special_shares(logw[mono], mono)
    if d.hypoxic_tumour > 0:
        tum = CELL_TYPES.index("tumour_epithelial")
        ids = _idx(list(reg["HALLMARK_HYPOXIA"].genes) + list(reg["HALLMARK_GLYCOLYSIS"].genes) + ["VEGFA"], index)
        logw[tum, ids] += d.hypoxic_tumour * _t3_folds(ids, eff_t3)
        special_shares(logw[tum], tum)
        must[tum] = ids
    if d.vegfa_macrophages > 0:
        mac = CELL_TYPES.index("macrophage")
        row = logw[mac].copy()
        hyp = _idx(reg["HALLMARK_HYPOXIA"].genes, index)
        ids = np.union1d(_idx(reg["HALLMARK_ANGIOGENESIS"].genes, index), hyp[eff_t3[hyp] > 0])
        row[ids] += _t3_folds(ids, eff_t3)
        tam = _idx(TAM_GENES, index)
        row[tam] = np.maximum(row[tam], np.quantile(row[plain], 0.997) + 0.8)
        special_shares(row, mac)
        rows.append((mac, row))
        must[mac] = np.union1d(ids, tam)
    return must, rows


def build_profiles(genes: GeneTable, rng: np.random.Generator, difficulty: Difficulty | None = None,
                   drng: np.random.Generator | None = None) -> Profiles:  # fmt: skip
    """Draw the cell-type profiles, neutrophil programme effects and gene dispersions.

    Parameters
    ----------
    genes
        The gene universe.
    rng
        Generator for this model (derived from the simulation seed).
    difficulty
        Difficulty knobs (:class:`atlas.simulate.Difficulty`; default: none).
    drng
        Generator for the draws of non-default knobs (kept apart so the rest of the model is the same).

    Returns
    -------
    Profiles
    """
    d = difficulty or Difficulty()
    drng = drng if drng is not None else np.random.default_rng(0)
    index = genes.index()
    n_genes, n_types = len(genes.symbols), len(CELL_TYPES)
    is_mt = np.zeros(n_genes, dtype=bool)
    is_mt[_idx(MT_GENES, index)] = True
    is_rb = np.array([s.startswith(("RPL", "RPS")) for s in genes.symbols])
    special = is_mt | is_rb
    plain = np.flatnonzero(~special)
    base = rng.normal(0.0, BASELINE_SD, n_genes)
    mt_rel = rng.normal(0.0, 0.5, n_genes)
    rb_rel = rng.normal(0.0, 0.4, n_genes)
    all_markers = _idx([g for m in MARKERS.values() for g in m], index)
    logw = np.empty((n_types, n_genes))

    def special_shares(lw: np.ndarray, t: int) -> None:
        # MT and ribosomal genes take fixed shares of the type's counts.
        w = np.exp(lw)
        w_plain = w[plain].sum()
        total = w_plain / (1.0 - MT_FRACTION[t] - RIBO_FRACTION[t])
        for mask, rel, frac in ((is_mt, mt_rel, MT_FRACTION[t]), (is_rb, rb_rel, RIBO_FRACTION[t])):
            r = np.exp(rel[mask])
            lw[mask] = np.log(frac * total * r / r.sum())

    for t, ctype in enumerate(CELL_TYPES):
        lw = base + rng.normal(0.0, 0.35, n_genes)
        lw[all_markers] = np.minimum(lw[all_markers], np.quantile(base, 0.6))  # markers: off elsewhere
        de = rng.choice(plain, size=200, replace=False)
        lw[de[:150]] += rng.normal(2.0, 0.6, 150)
        lw[de[150:]] -= rng.normal(1.5, 0.5, 50)
        mk = _idx(MARKERS[ctype], index)
        level = np.quantile(lw[plain], 0.997) + rng.normal(0.8, 0.4, mk.size)
        if d.marker_strength != 1.0:  # scale the log-fold over a typical well-expressed gene of the type
            ref = np.quantile(lw[plain], MARKER_REFERENCE_QUANTILE)
            level = np.maximum(ref + d.marker_strength * (level - ref), lw[mk])
        lw[mk] = level
        special_shares(lw, t)
        logw[t] = lw
    if d.marker_contrast != 1.0:
        _marker_contrast(logw, index, d.marker_contrast)
        for t in range(n_types):
            special_shares(logw[t], t)

    sets = state_gene_sets()
    # Neutrophil programmes: effects on universe genes first, then restricted to the neutrophil support.
    eff = np.zeros((len(PROGRAMS), n_genes))
    blood = _idx(sets["blood"], index)
    proxy = _idx(sets["T3_proxy"], index)
    optional = _idx(sets["T3_optional"], index)
    hallmark = np.setdiff1d(_idx(sets["hallmark"], index), np.concatenate([proxy, blood]))
    hallmark = np.sort(rng.choice(hallmark, size=int(round(0.4 * hallmark.size)), replace=False))
    neut = logw[NEUTROPHIL]
    high = np.quantile(neut[plain], 0.99)

    def lift(ids: np.ndarray, min_fold: float, gen: np.random.Generator = rng) -> np.ndarray:
        # Programme genes reach a high absolute level (top ~1% of the neutrophil profile), at least min_fold.
        return np.maximum(high + gen.normal(0.0, 0.5, ids.size) - neut[ids], min_fold)

    eff[0, blood] = 0.8
    eff[1, proxy] = lift(proxy, 1.5)
    eff[1, optional] = 0.5
    eff[1, hallmark] = rng.normal(1.5, 0.4, hallmark.size)
    eff[1, blood] = -rng.normal(2.0, 0.25, blood.size)
    for p, key in ((2, "immature"), (3, "interferon"), (4, "antigen_presenting")):
        ids = _idx(sets[key], index)
        eff[p, ids] += lift(ids, 1.5)
    extra = np.setdiff1d(
        _idx(sets["antigen_presenting_extra"], index), _idx(sets["antigen_presenting"], index)
    )
    eff[4, extra] += 1.0
    proxy_used, proxy_new = proxy, np.zeros(0, dtype=np.int64)
    if d.t3_proxy_overlap != 1.0:
        pool = np.setdiff1d(plain, np.concatenate([all_markers, _state_signature_genes(index),
                                                   _idx([g for v in sets.values() for g in v], index)]))
        pool = pool[neut[pool] > np.quantile(neut[plain], 0.5)]
        proxy_used, proxy_new = _swap_proxy_genes(drng, eff, proxy, blood, pool, d.t3_proxy_overlap,
                                                  lambda ids: lift(ids, 1.5, drng))
    # Tissue ageing: genes no other programme moves and no marker or analysed state signature holds.
    taken = np.union1d(np.flatnonzero(np.any(eff != 0, axis=0)), np.union1d(all_markers, _state_signature_genes(index)))
    ageing = np.setdiff1d(_idx(sets["ageing"], index), taken)
    eff[AGEING, ageing] = lift(ageing, 1.5)
    # ... and a broad shift of the transcriptome, as in real maturation trajectories (hundreds of genes)
    pool = np.setdiff1d(plain, np.union1d(taken, ageing))
    pool = pool[neut[pool] > np.quantile(neut[plain], 0.5)]
    drift = rng.choice(pool, size=min(AGEING_DRIFT_GENES, pool.size), replace=False)  # fewer in tiny universes
    n_up = 2 * drift.size // 3
    eff[AGEING, drift[:n_up]] = rng.normal(2.0, 0.4, n_up)
    eff[AGEING, drift[n_up:]] = -rng.normal(2.0, 0.4, drift.size - n_up)
    forced = np.flatnonzero(np.any(eff != 0, axis=0) | is_mt | is_rb)
    extra_must, extra_rows = _confounders(d, logw, eff[1], index, plain, special_shares)

    k = min(N_SUPPORT, n_genes)
    support = np.empty((n_types, k), dtype=np.int64)
    for t in range(n_types):
        must = np.union1d(np.flatnonzero(special), _idx(MARKERS[CELL_TYPES[t]], index))
        if t == NEUTROPHIL:
            must = np.union1d(must, forced)
        if t in extra_must:
            must = np.union1d(must, extra_must[t])
        rest = np.setdiff1d(np.arange(n_genes), must)
        order = np.argsort(-logw[t][rest], kind="stable")
        support[t] = np.sort(np.concatenate([must, rest[order[: k - must.size]]]))
    theta = np.clip(np.exp(rng.normal(np.log(6.0), 0.6, n_genes)), 0.5, 100.0)
    t3_genes = np.union1d(np.union1d(proxy_used, proxy_new), hallmark)
    profile_type = np.arange(n_types)
    if extra_rows:  # extra expression profiles of a type (SPP1/VEGFA-high macrophages)
        logw = np.vstack([logw] + [row for _, row in extra_rows])
        profile_type = np.concatenate([profile_type, [t for t, _ in extra_rows]])
    return Profiles(logw=logw, support=support, effects=eff[:, support[NEUTROPHIL]], theta=theta,
                    is_mt=is_mt, t3_genes=t3_genes, profile_type=profile_type,
                    t3_proxy_used=proxy_used, t3_replacements=proxy_new)  # fmt: skip


def w_t3(pt: np.ndarray) -> np.ndarray:
    """Weight of the T3 programme at reprogramming pseudotime ``pt``: a logistic switch plus a linear drift."""
    pt = np.asarray(pt, dtype=float)
    switch = 1.0 / (1.0 + np.exp(-(pt - T3_MIDPOINT) / T3_SCALE))
    return switch + T3_DRIFT * pt * (1.0 - switch)


def patient_t3_fraction(rng: np.random.Generator, cancer_type: str) -> float:
    """A patient's T3 fraction among tumour neutrophils (Beta around the cancer type's mean)."""
    m = CANCER_TYPES[cancer_type][0]
    return float(rng.beta(m * T3_CONCENTRATION, (1.0 - m) * T3_CONCENTRATION))


def sample_states(
    rng: np.random.Generator, n: int, tissue: str, t3_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw states and pseudotimes of ``n`` neutrophils of one sample.

    Parameters
    ----------
    rng
        Generator.
    n
        Number of neutrophils.
    tissue
        ``tumour``, ``adjacent_normal`` or ``blood``.
    t3_fraction
        The patient's T3 fraction among tumour neutrophils.

    Returns
    -------
    states, pseudotime
        State index per cell (into :data:`STATES`) and pseudotime in [0, 1].
    """
    p_t3 = {"tumour": t3_fraction, "adjacent_normal": ADJACENT_T3_FACTOR * t3_fraction, "blood": 0.0}[tissue]
    is_t3 = rng.random(n) < p_t3
    states = rng.choice(4, size=n, p=np.asarray(STATE_MIX[tissue]))
    states[is_t3] = 4
    pt = np.empty(n)
    mature_shape = {"tumour": (0.57, 1.4, 2.2), "adjacent_normal": (0.5, 1.2, 4.0), "blood": (0.25, 2.0, 5.0)}
    span, a, b = mature_shape[tissue]
    draws = {
        0: lambda m: rng.uniform(0.0, 0.08, m),
        1: lambda m: 0.05 + span * rng.beta(a, b, m),
        2: lambda m: 0.15 + 0.3 * rng.beta(2.0, 2.0, m),
        3: lambda m: 0.2 + 0.3 * rng.beta(2.0, 2.0, m),
        4: lambda m: T3_THRESHOLD + (1.0 - T3_THRESHOLD) * rng.beta(2.5, 1.5, m),
    }
    for s, draw in draws.items():
        sel = states == s
        pt[sel] = draw(int(sel.sum()))
    return states, pt


def program_weights(rng: np.random.Generator, states: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Per-cell weights of :data:`PROGRAMS` for neutrophils (with mild cell-to-cell variation).

    Parameters
    ----------
    rng
        Generator.
    states
        State index per neutrophil (into :data:`STATES`).
    pt
        Pseudotime per neutrophil.

    Returns
    -------
    numpy.ndarray
        (n, n_programs) weights.
    """
    n = states.size
    w = np.zeros((n, len(PROGRAMS)))
    t3 = w_t3(pt)
    w[:, 0] = (1.0 - t3) * np.where(states == 0, 0.3, 1.0)
    w[:, 1] = t3
    for s, col in ((0, 2), (2, 3), (3, 4)):
        w[states == s, col] = 1.0
    w[:, 2:AGEING] *= np.exp(rng.normal(0.0, 0.2, (n, AGEING - 2)))
    w[:, AGEING] = pt  # tissue ageing along the whole trajectory
    return w
