"""Study design of a simulation: data sets, their messiness, patients, samples and cells.

Every data set gets a deterministic *template* (cancer type, platform, file format, where counts
are, gene naming, obs column names, tissue spelling, missing columns) so that each kind of
messiness occurs once ``n_datasets >= 6``:

====  ==========  ===========  =======  =============  ========  =====  =========================
 #    cancer      platform     format   counts         genes     obs    missing columns
====  ==========  ===========  =======  =============  ========  =====  =========================
 0    PDAC        BD_Rhapsody  h5ad     X              symbol    A      -
 1    HCC         10x_3p       h5ad     layers/counts  ensembl   B      platform
 2    NSCLC       10x_5p       10x_mtx  X              symbol    C      cancer_type
 3    CRC         SeqWell      csv      X              symbol    B      -
 4    BRCA        10x_3p       h5ad     X              outdated  A      -
 5    melanoma    Smart-seq2   h5ad     layers/counts  symbol    C      platform, cancer_type
 6    PDAC mouse  10x_3p       h5ad     X              mouse     A      -  (KPC-like mouse model)
====  ==========  ===========  =======  =============  ========  =====  =========================

With the ``foreign`` difficulty setting every data set instead names its obs columns ``donor``,
``library``, ``site``, ``tech`` and ``tumor_type`` (values keep their template spellings).
With exactly 6 data sets the mouse model replaces data set 0; from data set 7 on the templates
repeat with other platforms (and mtx instead of csv, current instead of outdated symbols). The csv
data set is kept small (its size weight is reduced); a csv data set above 5,000 cells is written
as a 10x mtx directory instead, because csv is dense text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.errors import AtlasError
from . import biology as bio
from .difficulty import Difficulty

CSV_MAX_CELLS = 5_000
MIN_CELLS_PER_DATASET = 50
PLATFORM_ORDER = ("10x_3p", "BD_Rhapsody", "10x_5p", "SeqWell", "Smart-seq2")
_ALL_TISSUES = ("tumour", "adjacent_normal", "blood")
_TEMPLATES = (
    ("PDAC", "BD_Rhapsody", "h5ad", "X", "symbol", "A", 0, (), _ALL_TISSUES),
    ("HCC", "10x_3p", "h5ad", "layers/counts", "ensembl", "B", 1, ("platform",), ("tumour", "adjacent_normal")),
    ("NSCLC", "10x_5p", "10x_mtx", "X", "symbol", "C", 2, ("cancer_type",), ("tumour", "blood")),
    ("CRC", "SeqWell", "csv", "X", "symbol", "B", 3, (), ("tumour", "adjacent_normal")),
    ("BRCA", "10x_3p", "h5ad", "X", "outdated", "A", 1, (), _ALL_TISSUES),
    ("melanoma", "Smart-seq2", "h5ad", "layers/counts", "symbol", "C", 3, ("platform", "cancer_type"),
     ("tumour", "blood")),
)  # fmt: skip
_MOUSE = ("PDAC", "10x_3p", "h5ad", "X", "mouse", "A", 0, (), ("tumour", "blood"))

#: obs column of each schema field, per naming style.
OBS_STYLES: dict[str, dict[str, str]] = {
    "A": {"patient_id": "patient", "sample_id": "sample", "tissue": "tissue", "platform": "platform",
          "cancer_type": "cancer_type"},
    "B": {"patient_id": "donor_id", "sample_id": "sample_id", "tissue": "tissue", "platform": "assay",
          "cancer_type": "disease"},
    "C": {"patient_id": "Patient", "sample_id": "orig.ident", "tissue": "Tissue", "platform": "Platform",
          "cancer_type": "cancer"},
    "foreign": {"patient_id": "donor", "sample_id": "library", "tissue": "site", "platform": "tech",
                "cancer_type": "tumor_type"},
}  # fmt: skip
#: How tissues are spelled, per tissue style.
TISSUE_SPELLINGS = (
    {"tumour": "tumour", "adjacent_normal": "adjacent_normal", "blood": "blood"},
    {"tumour": "Tumor", "adjacent_normal": "Normal", "blood": "PBMC"},
    {"tumour": "T", "adjacent_normal": "N", "blood": "B"},
    {"tumour": "tumor", "adjacent_normal": "adjacent normal", "blood": "blood"},
)
PLATFORM_LONG = {"10x_3p": "10x 3' v3", "10x_5p": "10x 5' v2", "BD_Rhapsody": "BD Rhapsody",
                 "SeqWell": "Seq-Well", "Smart-seq2": "Smart-seq2"}  # fmt: skip
_TISSUE_CODE = {"tumour": "T", "adjacent_normal": "N", "blood": "B"}


@dataclass(frozen=True)
class DatasetSpec:
    """One simulated study and how it is (mis)formatted."""

    index: int
    id: str
    cancer_type: str
    species: str
    platform: str
    format: str  # h5ad | 10x_mtx | csv
    counts: str  # X | layers/counts
    gene_kind: str  # symbol | ensembl | outdated | mouse
    obs_style: str
    tissue_style: int
    missing: tuple[str, ...]
    tissues: tuple[str, ...]
    n_cells: int
    columns: str | None = None  # obs column naming (key of OBS_STYLES) when not that of obs_style

    def obs_columns(self) -> dict[str, str]:
        """obs column of each schema field in this data set."""
        return OBS_STYLES[self.columns or self.obs_style]

    def raw_value(self, field: str, canonical: str) -> str:
        """How this data set spells a canonical value of a schema field."""
        if field == "tissue":
            return TISSUE_SPELLINGS[self.tissue_style][canonical]
        if field == "platform" and self.obs_style == "B":
            return PLATFORM_LONG[canonical]
        if field == "cancer_type" and self.obs_style == "B":
            return bio.CANCER_TYPES[canonical][1]
        return canonical


def _template(d: int, n_datasets: int) -> tuple:
    if (n_datasets >= 7 and d == 6) or (n_datasets == 6 and d == 0):
        return _MOUSE
    cancer, platform, fmt, counts, genes, style, tstyle, missing, tissues = _TEMPLATES[d % 6]
    rnd = d // 6
    if rnd:
        platform = PLATFORM_ORDER[(d + 2 * rnd) % len(PLATFORM_ORDER)]
        fmt = "10x_mtx" if fmt == "csv" else fmt
        genes = "symbol" if genes == "outdated" else genes
        tstyle = (tstyle + rnd) % len(TISSUE_SPELLINGS)
    return cancer, platform, fmt, counts, genes, style, tstyle, missing, tissues


def _sizes(rng: np.random.Generator, n_cells: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Split ``n_cells`` into parts proportional to ``weights`` (exact sum, each >= minimum)."""
    rest = n_cells - minimum * weights.size
    share = rest * weights / weights.sum()
    out = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - out), kind="stable")
    out[order[: rest - out.sum()]] += 1
    return out + minimum


def design_datasets(rng: np.random.Generator, n_cells: int, n_datasets: int,
                    obs_style: str | None = None) -> list[DatasetSpec]:  # fmt: skip
    """The data sets of a simulation (see the module docstring for the templates).

    Parameters
    ----------
    rng
        Generator for the design.
    n_cells
        Total cells, split unevenly over the data sets (exact sum).
    n_datasets
        Number of data sets.
    obs_style
        obs column naming of every data set (a key of :data:`OBS_STYLES`, e.g. ``foreign``); None = the
        templates' names.

    Returns
    -------
    list of DatasetSpec
    """
    if n_datasets < 1:
        raise AtlasError(f"n_datasets={n_datasets}: simulate at least one data set")
    if n_cells < MIN_CELLS_PER_DATASET * n_datasets:
        raise AtlasError(
            f"n_cells={n_cells} is too small for {n_datasets} data sets; give at least "
            f"{MIN_CELLS_PER_DATASET} cells per data set (n_cells >= {MIN_CELLS_PER_DATASET * n_datasets})"
        )
    templates = [_template(d, n_datasets) for d in range(n_datasets)]
    weights = np.exp(rng.normal(0.0, 0.5, n_datasets))
    weights *= np.array([0.3 if t[2] == "csv" else 1.0 for t in templates])
    sizes = _sizes(rng, n_cells, weights, MIN_CELLS_PER_DATASET)
    specs = []
    for d, (t, n) in enumerate(zip(templates, sizes, strict=True)):
        cancer, platform, fmt, counts, genes, style, tstyle, missing, tissues = t
        if fmt == "csv" and n > CSV_MAX_CELLS:
            fmt = "10x_mtx"  # csv is dense text: too large above CSV_MAX_CELLS cells
        species = "mouse" if genes == "mouse" else "human"
        ds_id = f"ds{d + 1:02d}_{cancer}" + ("_mouse_KPC" if species == "mouse" else "")
        specs.append(DatasetSpec(d, ds_id, cancer, species, platform, fmt, counts, genes, style, tstyle,
                                 missing, tissues, int(n), obs_style))  # fmt: skip
    return specs


@dataclass
class Cells:
    """Per-cell ground truth and sampling parameters of one data set."""

    obs: pd.DataFrame  # the obs table as written (data-set-specific columns + truth_*)
    samples: pd.DataFrame  # one row per sample: patient, tissue, t3 fraction, lib factor
    patients: pd.DataFrame  # one row per patient
    sample: np.ndarray  # sample index per cell
    ctype: np.ndarray
    lib: np.ndarray
    log_mt: np.ndarray
    wprog: np.ndarray
    profile: np.ndarray | None = None  # expression profile per cell (its type unless an extra profile)


def _barcodes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` unique random 16-nt barcodes with a ``-1`` suffix."""
    codes = rng.integers(0, 4**16, size=n, dtype=np.uint64)
    while np.unique(codes).size < n:
        _, first = np.unique(codes, return_index=True)
        dup = np.setdiff1d(np.arange(n), first)
        codes[dup] = rng.integers(0, 4**16, size=dup.size, dtype=np.uint64)
    digits = (codes[:, None] >> (2 * np.arange(16, dtype=np.uint64))) & np.uint64(3)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)[digits.astype(np.int64)]
    return np.char.add(letters.view("S16").ravel().astype(str), "-1")


def _patient_name(spec: DatasetSpec, i: int) -> str:
    if spec.species == "mouse":
        return f"KPC{i + 1}"
    return {"A": f"P{i + 1:02d}", "B": f"donor_{i + 1}", "C": f"Pt{i + 1}"}[spec.obs_style]


def _sample_name(spec: DatasetSpec, patient: str, tissue: str) -> str:
    code = _TISSUE_CODE[tissue]
    return {"A": f"{patient}_{code}", "B": f"{patient}-{tissue}", "C": f"{spec.cancer_type}_{patient}{code}"}[
        spec.obs_style
    ]


def neutrophil_median_umis(platform: str, difficulty: Difficulty | None = None) -> float:
    """Median UMIs of a neutrophil on ``platform`` (before sample and cell variation).

    Parameters
    ----------
    platform
        A key of :data:`atlas.simulate.biology.PLATFORMS`.
    difficulty
        ``neutrophil_umi_droplet`` replaces the droplet platforms' median, ``neutrophil_umi_scale``
        multiplies the others'.

    Returns
    -------
    float
    """
    plat = bio.PLATFORMS[platform]
    if difficulty is None:
        return plat.neutrophil_umi
    if plat.droplet:
        return plat.neutrophil_umi if difficulty.neutrophil_umi_droplet is None else difficulty.neutrophil_umi_droplet
    return plat.neutrophil_umi * difficulty.neutrophil_umi_scale


def _extra_profiles(drng: np.random.Generator, ctype: np.ndarray, difficulty: Difficulty) -> np.ndarray:
    """Expression profile per cell: its type, or an extra profile row (SPP1/VEGFA-high macrophages)."""
    profile = ctype.astype(np.int64).copy()
    mac = bio.CELL_TYPES.index("macrophage")
    is_mac = np.flatnonzero(ctype == mac)
    tam = is_mac[drng.random(is_mac.size) < difficulty.vegfa_macrophages]
    profile[tam] = len(bio.CELL_TYPES)  # the first extra profile (see biology.build_profiles)
    return profile


def draw_cells(rng: np.random.Generator, spec: DatasetSpec, difficulty: Difficulty | None = None,
               drng: np.random.Generator | None = None) -> Cells:  # fmt: skip
    """Patients, samples and cells (types, states, pseudotime, library sizes) of one data set.

    Parameters
    ----------
    rng
        Generator of this data set.
    spec
        The data set.
    difficulty
        Difficulty knobs (neutrophil UMIs, SPP1/VEGFA-high macrophages); default: none.
    drng
        Generator for the draws of non-default knobs (the other draws stay those of ``rng``).

    Returns
    -------
    Cells
    """
    plat = bio.PLATFORMS[spec.platform]
    n_pat = int(rng.integers(2, 7))
    pats, samples = [], []
    for i in range(n_pat):
        name = _patient_name(spec, i)
        f_t3 = bio.patient_t3_fraction(rng, spec.cancer_type)
        pats.append({"patient": name, "t3_fraction": f_t3})
        for tissue in spec.tissues:
            if tissue == "tumour" or i == 0 or rng.random() < 0.6:
                weight = {"tumour": 1.0, "adjacent_normal": 0.6, "blood": 0.5}[tissue] * np.exp(
                    rng.normal(0, 0.3)
                )
                samples.append({"sample": _sample_name(spec, name, tissue), "patient": name, "tissue": tissue,
                                "t3_fraction": f_t3, "weight": weight,
                                "lib_factor": float(np.exp(rng.normal(0.0, 0.2)))})  # fmt: skip
    samples = pd.DataFrame(samples)
    minimum = min(5, spec.n_cells // len(samples))
    samples["n_cells"] = _sizes(rng, spec.n_cells, samples["weight"].to_numpy(), minimum)

    n_types = len(bio.CELL_TYPES)
    sample_idx, ctype, state, pt, wprog = [], [], [], [], []
    for s, row in samples.iterrows():
        comp = np.asarray(bio.COMPOSITION[row["tissue"]], dtype=float)
        comp[bio.NEUTROPHIL] *= plat.neutrophil_capture
        pos = comp > 0
        share = np.zeros(n_types)
        share[pos] = rng.dirichlet(40.0 * comp[pos] / comp[pos].sum())
        types = rng.choice(n_types, size=int(row["n_cells"]), p=share)
        st = np.full(types.size, -1)
        tp = np.full(types.size, np.nan)
        w = np.zeros((types.size, len(bio.PROGRAMS)))
        neut = types == bio.NEUTROPHIL
        st[neut], tp[neut] = bio.sample_states(rng, int(neut.sum()), row["tissue"], row["t3_fraction"])
        w[neut] = bio.program_weights(rng, st[neut], tp[neut])
        sample_idx.append(np.full(types.size, s))
        ctype.append(types)
        state.append(st)
        pt.append(tp)
        wprog.append(w)
    sample_idx, ctype, state = np.concatenate(sample_idx), np.concatenate(ctype), np.concatenate(state)
    pt, wprog = np.concatenate(pt), np.concatenate(wprog)
    n = ctype.size

    medians = np.array([neutrophil_median_umis(spec.platform, difficulty) if t == "neutrophil" else bio.TYPE_UMI[t] * plat.umi_factor
                        for t in bio.CELL_TYPES])  # fmt: skip
    lib = (
        medians[ctype]
        * samples["lib_factor"].to_numpy()[sample_idx]
        * np.exp(rng.normal(0, bio.LIBRARY_SD, n))
    )
    quality = rng.choice(3, size=n, p=[1 - bio.DAMAGED_FRACTION - bio.LOW_QUALITY_FRACTION,
                                       bio.DAMAGED_FRACTION, bio.LOW_QUALITY_FRACTION])  # fmt: skip
    log_mt = np.where(quality == 1, np.log(rng.uniform(8.0, 20.0, n)), 0.0)
    lib = np.where(quality == 1, 0.6 * lib, lib)
    lib = np.where(quality == 2, lib * rng.uniform(0.03, 0.1, n), lib)

    cols = spec.obs_columns()
    tissue = samples["tissue"].to_numpy()[sample_idx]
    obs = pd.DataFrame(index=pd.Index(_barcodes(rng, n), name=None))
    obs[cols["patient_id"]] = samples["patient"].to_numpy()[sample_idx]
    obs[cols["sample_id"]] = samples["sample"].to_numpy()[sample_idx]
    obs[cols["tissue"]] = [spec.raw_value("tissue", t) for t in tissue]
    if "platform" not in spec.missing:
        obs[cols["platform"]] = spec.raw_value("platform", spec.platform)
    if "cancer_type" not in spec.missing:
        obs[cols["cancer_type"]] = spec.raw_value("cancer_type", spec.cancer_type)
    obs["truth_cell_type"] = np.asarray(bio.CELL_TYPES)[ctype]
    obs["truth_state"] = np.where(state >= 0, np.asarray(bio.STATES)[np.maximum(state, 0)], "")
    obs["truth_pseudotime"] = pt
    obs["truth_quality"] = np.asarray(["ok", "damaged", "low_quality"])[quality]
    patients = pd.DataFrame(pats)
    profile = None
    if difficulty is not None and difficulty.vegfa_macrophages > 0:
        profile = _extra_profiles(drng if drng is not None else rng, ctype, difficulty)
    return Cells(obs, samples, patients, sample_idx, ctype, lib, log_mt, wprog, profile)
