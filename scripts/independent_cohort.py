"""A second cohort generator, designed apart from ``atlas.simulate``: a check that atlas was not built for its own simulator.

    python scripts/independent_cohort.py OUT --n-cells 8000 --n-datasets 8 --seed 0

Writes ``OUT/datasets/*`` (h5ad, h5ad with counts in a layer and Ensembl ids, 10x mtx, gzipped csv; one
mouse data set), ``OUT/ingest.yaml`` (what a user would write: the data sets' own column names and value
spellings mapped, atlas's QC defaults, ``keep_obs: [truth_*]`` so the benchmark can evaluate) and
``OUT/truth/`` in the layout :mod:`atlas.simulate.evaluate` reads (``patients.csv``,
``cancer_types.csv``). ``scripts/bench_robustness.py --grid independent`` runs atlas and the naive peer on it.

What differs from atlas's simulator, on purpose (only the gene names and the 9 cell-type / 5 state
vocabularies are shared, as they are the evaluation's):

* counts: a Splatter-like model (gamma gene means, log-normal library sizes, a biological coefficient of
  variation that falls with expression drawn per cell and gene, Poisson sampling, logistic drop-out), with
  a study x gene log-normal batch effect, a platform x gene effect and a sample factor;
* cell types: each has 1-3 "canonical" markers of a broad published list *dropped* (not specific in this
  cohort), its markers' fold changes drawn log-normally per cohort, and 150 unnamed DE genes;
* neutrophil states: the T3 programme is built from LuCA's TAN-3, the pre-publication tan_sig2, Wu's TAN-1
  and Zilionis' hN5 genes plus 40 unnamed genes (about a third of ``T3_proxy``); the naive programme
  from hN3 and the NAN genes; a programme's named genes are expressed by neutrophils at a high quantile of
  all genes (85-98 % for T3, which rises about 6-fold, 90-99.5 % for the naive genes, 70-95 % for the side
  states, which rise about 12-fold); its switch is ``sigmoid((t - 0.62) / 0.06)`` with a 15 % linear drift, and
  T3 is ``t >= 0.7``; a 200-gene maturation drift along ``t`` (3-7 fold at ``t = 1``); interferon (hN2) and antigen-presenting side
  states; an immature state from granule and promyelocyte genes;
* with ``--extra-types``: tissues also hold mast, plasma and dendritic cells, types outside atlas's marker panel
  (``bench_robustness.py --grid independent_extra_types``);
* with ``--sorted-share S``: that share of the studies sorted their neutrophils before sequencing (CD66b+ or Ly6G+
  FACS/MACS, as most neutrophil papers do, Ng et al. 2024 among them): each of their samples is 85-97 %
  neutrophils, the rest the tissue's other cells (``--grid independent_sorted``: 3 of 8 studies;
  ``independent_all_sorted``: every study, an atlas of sorted neutrophils only);
* with ``--hvg-only-share S``: that share of the studies deposited only their 2,000 most variable genes (the
  scanpy tutorial's ``highly_variable_genes(flavor="seurat", n_top_genes=2000)`` on their own log-normalised
  counts, the counts then subset to them), as public processed objects often are: the other genes, the
  mitochondrial ones among them unless picked, are absent from their files (``--grid independent_hvg_only``:
  3 of 8 studies); the cells and their counts are the plain cohort's;
* confounders: monocytes express the neutrophil S100A8/S100A9/FCN1/MNDA/LYZ genes, tumour cells a hypoxia
  programme (HALLMARK_HYPOXIA genes, VEGFA among them), a share of macrophages are SPP1/VEGFA-high;
* cohort: cancer-type means are a random permutation of six values per seed (no fixed order), patients'
  T3 fractions are logit-normal around them (not Beta), each sample has its own ambient share (1-8 %),
  4 % of cells are damaged (high mitochondrial share, few counts);
* metadata: columns ``subject``, ``indication``, ``site``, ``assay``, ``library``; values spelled
  ``Tumor`` / ``Normal adjacent`` / ``Blood`` and long cancer names.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
import yaml

from atlas.simulate.genes import MT_GENES, build_gene_table

CELL_TYPES = ("neutrophil", "monocyte", "macrophage", "T", "B", "NK", "tumour_epithelial", "fibroblast",
              "endothelial")  # fmt: skip
#: Broad marker lists (published canonical markers); each cohort drops some of them (not specific there).
MARKERS = {
    "neutrophil": ("CSF3R", "FCGR3B", "CXCR2", "CXCR1", "S100A8", "S100A9", "S100A12", "FPR1", "FPR2", "MNDA",
                   "G0S2", "NAMPT", "AQP9", "PROK2", "CMTM2", "MME", "SELL", "IL1R2", "MMP9", "PADI4",
                   "CLEC4D", "VNN2", "BCL2A1", "IFITM2", "TREM1", "LITAF"),
    "monocyte": ("CD14", "LYZ", "VCAN", "FCN1", "S100A4", "CSF1R", "CTSS", "LST1", "AIF1", "MS4A7"),
    "macrophage": ("C1QA", "C1QB", "C1QC", "APOE", "CD68", "CD163", "MRC1", "MSR1", "SELENOP", "FOLR2", "TREM2"),
    "T": ("CD3E", "CD3D", "CD3G", "CD2", "IL7R", "TRAC", "CD247", "LCK", "CD6", "CD5"),
    "B": ("MS4A1", "CD79A", "CD79B", "CD19", "BANK1", "IGHM", "CD22", "PAX5", "FCRL5"),
    "NK": ("NKG7", "GNLY", "KLRD1", "PRF1", "GZMB", "KLRF1", "FCGR3A", "NCAM1", "GZMA"),
    "tumour_epithelial": ("EPCAM", "KRT8", "KRT18", "KRT19", "KRT7", "CLDN4", "ELF3", "CDH1", "MUC1"),
    "fibroblast": ("COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "PDGFRA", "FAP", "FBLN1", "COL6A3"),
    "endothelial": ("PECAM1", "VWF", "CDH5", "PLVAP", "CLDN5", "EMCN", "KDR", "ESAM", "RAMP2"),
}  # fmt: skip
#: Monocyte genes shared with neutrophils (confounder).
MONO_SHARED = ("S100A8", "S100A9", "FCN1", "MNDA", "LYZ", "S100A12", "CSF3R")
T3_GENES = ("CTSB", "LGALS3", "PLIN2", "PLPP3", "MAP1LC3B", "PLAU", "OLR1", "TNFSF15", "CISH", "P4HA1", "CDKN1A",
            "ACVR1B", "HSD17B4", "HIC1", "SEMA7A", "TGM2", "BHLHE40", "IL18BP", "C3AR1", "MMP12", "CSTB", "CCL3",
            "VEGFA", "IRAK2", "CSF1", "PKM", "GAPDH", "TPI1", "BNIP3L", "HMOX1")  # fmt: skip
NAIVE_GENES = ("CXCR2", "CXCR1", "PTGS2", "SELL", "CSF3R", "FCGR3B", "TXNIP", "CDC42EP2", "MPZL1", "CFD",
               "VMP1", "NCOA4", "JAML", "RASSF3", "EGLN1", "SELPLG", "ALPL", "TSC22D3", "S100A12")  # fmt: skip
IMMATURE_GENES = ("LTF", "LCN2", "CAMP", "MMP8", "CEACAM8", "OLFM4", "MPO", "ELANE", "AZU1", "DEFA4", "CTSG",
                  "PRTN3", "BPI", "CRISP3")  # fmt: skip
IFN_GENES = ("ISG15", "RSAD2", "IFIT2", "IFIT3", "IFIT1", "XAF1", "HERC5", "OASL", "MX1", "PARP14", "IFI6",
             "UBE2L6", "IRF7", "IFI44L", "GBP5", "OAS2", "STAT1", "EPSTI1", "GBP1", "IFITM3")  # fmt: skip
AP_GENES = ("HLA-DRA", "HLA-DRB1", "CD74", "HLA-DPA1", "HLA-DPB1", "HLA-DQA1", "HLA-DMA", "HLA-DMB")
HYPOXIA_GENES = ("PGK1", "PDK1", "NDRG1", "HK2", "ALDOA", "SLC2A1", "ADM", "P4HA2", "ENO1", "PFKFB3", "VEGFA",
                 "BNIP3", "LDHA", "ANGPTL4", "ERO1A", "DDIT4", "CA9", "BHLHE40", "AK4", "MXI1")  # fmt: skip
SPP1_MAC_GENES = ("SPP1", "VEGFA", "FN1", "ARG2", "MMP12", "TREM2", "CD9", "GPNMB")
CANCERS = {
    "PDAC": "pancreatic ductal adenocarcinoma", "HCC": "hepatocellular carcinoma",
    "NSCLC": "non-small cell lung cancer", "CRC": "colorectal cancer", "BRCA": "breast cancer",
    "melanoma": "cutaneous melanoma",
}  # fmt: skip
CANCER_MEANS = (0.50, 0.36, 0.26, 0.17, 0.09, 0.04)  # patients' median T3 fraction per cancer type
PATIENT_LOGIT_SD = 0.6  # patients' spread around it, on the logit scale
#: Platform -> (droplet, neutrophil median UMIs range, other cells' median UMIs range)
PLATFORMS = {"10x_3p": (True, (280, 450), (1800, 4000)), "10x_5p": (True, (300, 500), (1500, 3500)),
             "BD_Rhapsody": (False, (800, 1500), (2500, 5000)), "SeqWell": (False, (600, 1100), (1500, 3000))}  # fmt: skip
TISSUE_SPELLING = {"tumour": "Tumor", "adjacent_normal": "Normal adjacent", "blood": "Blood"}
#: Cell-type shares by tissue (Dirichlet means; each sample draws its own).
COMPOSITION = {
    "tumour": (0.14, 0.07, 0.13, 0.2, 0.06, 0.05, 0.2, 0.09, 0.06),
    "adjacent_normal": (0.09, 0.07, 0.12, 0.2, 0.07, 0.05, 0.22, 0.11, 0.07),
    "blood": (0.40, 0.16, 0.0, 0.27, 0.09, 0.08, 0.0, 0.0, 0.0),
}  # fmt: skip


#: Cell types outside atlas's marker panel (``extra_types``): tumours hold them, and a caller that knows only its
#: panel must leave them unknown rather than give them the nearest panel type. Dendritic cells carry the HLA class
#: II genes of the neutrophils' antigen-presenting state; plasma cells share CD79A with B cells.
EXTRA_MARKERS = {
    "mast": ("CPA3", "KIT", "MS4A2", "HDC", "GATA2", "TPSAB1", "TPSB2", "CLC"),
    "plasma": ("JCHAIN", "MZB1", "IGKC", "XBP1", "SDC1", "IGHG1", "CD79A"),
    "dendritic": ("CD1C", "FCER1A", "CLEC10A", "CLEC9A", "XCR1", "CCR7", "LAMP3", "HLA-DRA", "CD74", "HLA-DPA1"),
}  # fmt: skip
EXTRA_COMPOSITION = {"tumour": (0.03, 0.03, 0.02), "adjacent_normal": (0.03, 0.02, 0.02), "blood": (0.0, 0.0, 0.01)}


#: Named variants of the cohort (benchmark grid points, ``bench_robustness.py --grid`` / ``bench_query.py --cohort``)
#: -> :func:`generate` options: the plain cohort; tissues that also hold types outside atlas's marker panel; droplet
#: platforms that capture a tenth of the tissue's neutrophils; the plain cohort with heterotypic doublets (8 % of a
#: droplet sample's cells, as 10x reports for ~10,000 cells loaded; half that on the other platforms); studies that
#: sorted their neutrophils (3 of 8, or all of them).
VARIANTS = {
    "independent": {},
    "independent_extra_types": {"extra_types": True},
    "independent_rare_droplet_neutrophils": {"droplet_neutrophil_capture": 0.1},
    "independent_doublets": {"doublet_rate": 0.08},
    "independent_sorted": {"sorted_share": 0.375},
    "independent_all_sorted": {"sorted_share": 1.0},
    "independent_hvg_only": {"hvg_only_share": 0.375},
    "independent_panel500": {"hvg_only_share": 0.375, "deposit_genes": 500},
}
#: Neutrophils' share of a sorted sample (each sample draws its own): FACS or MACS purity.
SORT_PURITY = (0.85, 0.97)
#: Genes an HVG-only study deposits (scanpy's tutorial value).
HVG_DEPOSIT = 2000


def _named_genes(markers: dict) -> tuple[str, ...]:
    """Every gene a marker list or a programme names (the rest of the genes are drawn at random)."""
    return tuple(sorted({g for gs in (*markers.values(), T3_GENES, NAIVE_GENES, IMMATURE_GENES, IFN_GENES, AP_GENES,
                                      HYPOXIA_GENES, SPP1_MAC_GENES) for g in gs}))  # fmt: skip


NAMED_GENES = _named_genes(MARKERS)


class World:
    """Per-cohort biology: base profiles (log means), programmes (gene index, log fold) and batch effects."""

    def __init__(self, rng: np.random.Generator, n_datasets: int, extra_types: bool = False) -> None:
        marker_lists = MARKERS | (EXTRA_MARKERS if extra_types else {})
        named = _named_genes(marker_lists)
        self.cell_types = tuple(marker_lists)
        self.composition = {k: v + (EXTRA_COMPOSITION[k] if extra_types else ()) for k, v in COMPOSITION.items()}
        self.table = build_gene_table(15000, extra=named)
        idx = self.table.index()
        g = len(self.table.symbols)
        mito = np.array([idx[m] for m in MT_GENES if m in idx])
        free = np.setdiff1d(np.arange(g), mito)
        unnamed = np.setdiff1d(free, np.array(sorted(idx[x] for x in named if x in idx)))
        base = np.log(rng.gamma(0.6, 1 / 0.3, g))  # Splatter-like gene means, 2 % high outliers
        out_genes = rng.choice(unnamed, int(0.02 * g), replace=False)
        base[out_genes] += rng.lognormal(np.log(3.0), 0.3, len(out_genes))
        base[mito] = -np.inf
        high = float(np.quantile(base[free], 0.995))
        markers = np.array(sorted({idx[m] for ms in marker_lists.values() for m in ms if m in idx}))
        base[markers] = np.quantile(base[free], 0.3) + rng.normal(0, 0.5, len(markers))  # off elsewhere
        self.mito = mito
        self.base = {}
        self.dropped = {}
        for t, markers in marker_lists.items():
            prof = base + rng.normal(0, 0.25, g)
            de = rng.choice(unnamed, 150, replace=False)
            prof[de] += rng.normal(0, 1.0, 150)
            keep = [m for m in markers if m in idx]
            drop = list(rng.choice(keep, rng.integers(1, 4), replace=False))
            self.dropped[t] = drop
            for m in keep:
                if m not in drop:  # strongly expressed, strength varying by gene
                    prof[idx[m]] = high + rng.normal(0, 0.8)
            self.base[t] = prof
        for m in ("S100A8", "S100A9"):  # the bulk of a neutrophil's transcripts
            self.base["neutrophil"][idx[m]] = high + rng.uniform(2.0, 3.0)
        mono = self.base["monocyte"]
        for m in MONO_SHARED:
            mono[idx[m]] = max(mono[idx[m]], self.base["neutrophil"][idx[m]] - rng.uniform(0.3, 1.2))

        neut = self.base["neutrophil"]
        levels = np.sort(base[free])

        def prog(genes, mu, sd, extra=0, level=None):
            """(genes, log folds); named genes a neutrophil expresses at a quantile in ``level`` of all genes."""
            named_ii = [idx[x] for x in genes if x in idx]
            if level is not None:
                q = rng.uniform(*level, len(named_ii))
                neut[named_ii] = np.maximum(neut[named_ii], levels[(q * (len(levels) - 1)).astype(int)])
            ii = np.array(named_ii + (list(rng.choice(unnamed, extra, replace=False)) if extra else []))
            return ii, rng.normal(mu, sd, len(ii))

        self.t3 = prog(T3_GENES, 1.8, 0.4, extra=40, level=(0.85, 0.98))
        self.naive = prog(NAIVE_GENES, -1.0, 0.3, level=(0.9, 0.995))
        self.immature = prog(IMMATURE_GENES, 2.5, 0.5, level=(0.7, 0.95))
        self.ifn = prog(IFN_GENES, 2.5, 0.5, level=(0.7, 0.95))
        self.ap = prog(AP_GENES, 2.5, 0.5, level=(0.7, 0.95))
        expressed = unnamed[neut[unnamed] > np.quantile(neut[unnamed], 0.7)]
        drift = rng.choice(expressed, 200, replace=False)
        self.drift = (drift, rng.choice([-1.0, 1.0], 200, p=[0.4, 0.6]) * rng.uniform(1.0, 2.0, 200))
        self.hypoxia = prog(HYPOXIA_GENES, 1.2, 0.4)
        self.spp1 = prog(SPP1_MAC_GENES, 2.0, 0.4)
        self.study = [rng.normal(0, 0.35, g) for _ in range(n_datasets)]
        self.platform = {p: rng.normal(0, 0.25, g) for p in PLATFORMS}
        perm = rng.permutation(len(CANCER_MEANS))
        self.cancer_mean = {c: CANCER_MEANS[i] for c, i in zip(CANCERS, perm, strict=True)}


def _neutrophil_states(rng, n: int, tissue: str, f: float):
    """(state, t) of ``n`` neutrophils in ``tissue`` of a patient whose tumour T3 fraction is ``f``."""
    p_t3 = {"tumour": f, "adjacent_normal": 0.15 * f, "blood": 0.0}[tissue]
    t3 = rng.random(n) < p_t3
    u = rng.random(n)
    imm_share, ifn_share, ap_share = {"tumour": (0.04, 0.10, 0.06), "adjacent_normal": (0.05, 0.08, 0.04),
                                      "blood": (0.08, 0.05, 0.0)}[tissue]  # fmt: skip
    tmax = 0.3 if tissue == "blood" else 0.68
    state = np.where(u < imm_share, "immature", np.where(u < imm_share + ifn_share, "interferon",
                     np.where(u < imm_share + ifn_share + ap_share, "antigen_presenting", "mature")))  # fmt: skip
    t = np.where(state == "immature", rng.uniform(0, 0.08, n), rng.uniform(0.08, tmax, n))
    side = (state == "interferon") | (state == "antigen_presenting")
    t[side] = rng.uniform(0.15, min(tmax, 0.6), side.sum())
    state[t3], t[t3] = "T3", rng.uniform(0.7, 1.0, t3.sum())
    return state, t


def _log_profiles(w: World, types: np.ndarray, state: np.ndarray, t: np.ndarray, tissue: str, rng) -> np.ndarray:
    """Cells x genes log expression weights before batch effects."""
    out = np.stack([w.base[c] for c in types])
    neut = types == "neutrophil"
    if neut.any():
        tt = t[neut]
        s = 1 / (1 + np.exp(-(tt - 0.62) / 0.06))
        w3 = 0.85 * s + 0.15 * tt
        sub = out[neut]
        for (ii, lfc), wt in ((w.t3, w3), (w.naive, w3), (w.drift, tt),
                              (w.immature, (state[neut] == "immature") * 1.0),
                              (w.ifn, (state[neut] == "interferon") * 1.0),
                              (w.ap, (state[neut] == "antigen_presenting") * 1.0)):  # fmt: skip
            sub[:, ii] += wt[:, None] * lfc[None, :]
        out[neut] = sub
    if tissue == "tumour":
        epi = types == "tumour_epithelial"
        ii, lfc = w.hypoxia
        out[np.ix_(epi, ii)] += rng.uniform(0.3, 1.0, epi.sum())[:, None] * lfc[None, :]
        mac = (types == "macrophage") & (rng.random(len(types)) < 0.3)
        ii, lfc = w.spp1
        out[np.ix_(mac, ii)] += lfc[None, :]
    return out


def _proportions(logw: np.ndarray, mito: np.ndarray) -> np.ndarray:
    """Each cell's share of its non-mitochondrial transcripts per gene."""
    p = np.exp(logw - logw.max(axis=1, keepdims=True))
    p[:, mito] = 0
    return p / p.sum(axis=1, keepdims=True)


def _counts(rng, p: np.ndarray, lib: np.ndarray, mito_share: np.ndarray, mito: np.ndarray, ambient: float,
            soup: np.ndarray) -> sp.csr_matrix:
    """Splatter-like counts from :func:`_proportions`: ambient mix, mitochondrial share, BCV gamma noise, Poisson,
    drop-out."""
    p = (1 - ambient) * p + ambient * soup[None, :]
    p *= (1 - mito_share)[:, None]
    p[:, mito] = mito_share[:, None] / len(mito)
    mu = p * lib[:, None]
    bcv = (0.2 + 1 / np.sqrt(np.maximum(mu, 1e-3))) * np.sqrt(30 / rng.chisquare(30, mu.shape))
    shape = 1 / np.maximum(bcv, 1e-3) ** 2
    lam = rng.gamma(shape, mu / shape)
    x = rng.poisson(lam).astype(np.float32)
    drop = rng.random(x.shape) < 1 / (1 + np.exp(1.0 * (np.log(np.maximum(mu, 1e-9)) + 3.0)))
    x[drop] = 0
    return sp.csr_matrix(x)


def _design(rng, n_cells: int, n_datasets: int) -> pd.DataFrame:
    """One row per sample: data set, cancer, species, platform, patient, tissue, n cells."""
    cancers = list(CANCERS)
    ds_cancer = cancers + list(rng.choice(cancers, max(0, n_datasets - len(cancers))))
    ds_cancer = ds_cancer[:n_datasets]
    rows = []
    for d, cancer in enumerate(ds_cancer):
        platform = rng.choice(list(PLATFORMS))
        species = "mouse" if d == n_datasets - 1 and n_datasets > 6 else "human"
        for p in range(int(rng.integers(3, 7))):
            tissues = ["tumour"] + (["adjacent_normal"] if rng.random() < 0.6 else []) + (
                ["blood"] if rng.random() < 0.3 and species == "human" else [])  # fmt: skip
            for tissue in tissues:
                rows.append({"d": d, "dataset": f"study{d + 1:02d}_{cancer}", "cancer_type": cancer,
                             "species": species, "platform": platform, "patient": f"S{d + 1}P{p + 1}",
                             "tissue": tissue, "weight": rng.lognormal(0, 0.5)})  # fmt: skip
    des = pd.DataFrame(rows)
    des["n"] = np.maximum(30, np.round(des["weight"] / des["weight"].sum() * n_cells)).astype(int)
    return des


def _add_doublets(drng, x: sp.csr_matrix, types: np.ndarray, rate: float) -> tuple[sp.csr_matrix, np.ndarray]:
    """Make ``rate`` of the cells heterotypic doublets: each takes the counts of a cell of another type on top of its
    own (two cells captured in one droplet); returns the counts and each cell's pair (``"a+b"``, "" for singlets)."""
    n = len(types)
    pair = np.full(n, "", dtype=object)
    idx = drng.choice(n, drng.binomial(n, rate), replace=False)
    rows, cols = [], []
    for i in idx:
        others = np.flatnonzero(types != types[i])
        if others.size:
            j = int(drng.choice(others))
            rows.append(i)
            cols.append(j)
            pair[i] = "+".join(sorted((str(types[i]), str(types[j]))))
    if rows:
        x = (x + sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n)) @ x).tocsr()
    return x, pair


def _sample(rng, w: World, row, f: float, droplet_capture: float = 1.0, doublet_rate: float = 0.0,
            drng: np.random.Generator | None = None, purity: float | None = None) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """One sample's counts and obs; ``droplet_capture`` scales the neutrophils' share on droplet platforms;
    ``doublet_rate`` (half of it off droplet platforms) makes heterotypic doublets, drawn from ``drng`` so that
    the rest of the cohort is the one without them; ``purity``: the neutrophils' share of a sorted sample."""
    droplet, neut_umi, other_umi = PLATFORMS[row.platform]
    share = np.array(w.composition[row.tissue], dtype=float)
    ni = w.cell_types.index("neutrophil")
    if purity is not None:
        others = np.arange(len(share)) != ni
        share[others] *= (1 - purity) / share[others].sum()
        share[ni] = purity
    elif droplet:
        share[ni] *= droplet_capture
    comp = rng.dirichlet(share * 40 + 1e-3)
    types = np.asarray(w.cell_types)[rng.choice(len(w.cell_types), row.n, p=comp)]
    state, t = np.full(row.n, "", object), np.full(row.n, np.nan)
    neut = types == "neutrophil"
    state[neut], t[neut] = _neutrophil_states(rng, int(neut.sum()), row.tissue, f)
    logw = _log_profiles(w, types, state, t, row.tissue, rng)
    logw += w.study[row.d] + w.platform[row.platform] + rng.normal(0, 0.1, logw.shape[1])
    med = np.where(neut, rng.uniform(*neut_umi), rng.uniform(*other_umi))
    lib = rng.lognormal(np.log(med), 0.5)
    mito_share = rng.beta(2, 40, row.n)
    damaged = rng.random(row.n) < 0.04
    mito_share[damaged] = rng.uniform(0.3, 0.6, damaged.sum())
    lib[damaged] *= 0.35
    ambient = rng.uniform(0.01, 0.08)
    p = _proportions(logw, w.mito)
    soup = p.mean(axis=0)  # the sample's ambient profile
    x = sp.vstack([_counts(rng, p[i:i + 500], lib[i:i + 500], mito_share[i:i + 500], w.mito, ambient, soup)
                   for i in range(0, row.n, 500)]).tocsr()  # fmt: skip
    pair = None
    if doublet_rate > 0:
        x, pair = _add_doublets(drng, x, types, doublet_rate if droplet else doublet_rate / 2)
        dbl = pair != ""
        types = types.astype(object)
        types[dbl], state[dbl], t[dbl] = "doublet", "", np.nan
    obs = pd.DataFrame({
        "subject": row.patient, "indication": CANCERS[row.cancer_type], "site": TISSUE_SPELLING[row.tissue],
        "assay": row.platform, "library": f"{row.patient}_{row.tissue}",
        "truth_cell_type": types, "truth_state": state.astype(str), "truth_pseudotime": t,
        "truth_quality": np.where(damaged, "damaged", "ok"),
    })  # fmt: skip
    if pair is not None:
        obs["truth_doublet"] = pair.astype(str)
    return x, obs


def _deposited_genes(x: sp.csr_matrix, n_top: int = HVG_DEPOSIT) -> np.ndarray:
    """Boolean gene mask of an HVG-only deposit: the scanpy tutorial's seurat-flavour HVGs of the study's counts."""
    import scanpy as sc

    a = ad.AnnData(x.astype(np.float32))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, flavor="seurat", n_top_genes=n_top)
    return a.var["highly_variable"].to_numpy()


def _write(out: Path, d: int, name: str, species: str, x: sp.csr_matrix, obs: pd.DataFrame, table,
           genes: np.ndarray | None = None) -> dict:
    """Write one data set in the format its index picks; returns its ingest.yaml entry. ``genes``: a boolean mask
    of the genes its files hold (None: all)."""
    dsdir = out / "datasets"
    dsdir.mkdir(parents=True, exist_ok=True)
    obs.index = [f"{name}_c{i}" for i in range(len(obs))]
    if genes is not None:
        x = x[:, genes].tocsr()
        table = dataclasses.replace(table, **{k: tuple(np.asarray(getattr(table, k))[genes])
                                              for k in ("symbols", "ensembl", "mouse")})
    symbols = list(table.symbols)
    entry = {"id": name, "species": species,
             "obs_columns": {"patient_id": "subject", "sample_id": "library", "tissue": "site",
                             "platform": "assay", "cancer_type": "indication"},
             "value_maps": {"tissue": {v: k for k, v in TISSUE_SPELLING.items()},
                            "cancer_type": {v: k for k, v in CANCERS.items()}}}  # fmt: skip
    if species == "mouse":
        keep = np.array([bool(m) for m in table.mouse])
        a = ad.AnnData(x[:, keep], obs=obs, var=pd.DataFrame(index=np.asarray(table.mouse)[keep]))
        a.write_h5ad(dsdir / f"{name}.h5ad")
        return entry | {"path": f"datasets/{name}.h5ad", "format": "h5ad", "counts": "X", "gene_ids": "symbol"}
    kind = d % 4
    if kind == 0:
        ad.AnnData(x, obs=obs, var=pd.DataFrame(index=symbols)).write_h5ad(dsdir / f"{name}.h5ad")
        return entry | {"path": f"datasets/{name}.h5ad", "format": "h5ad", "counts": "X", "gene_ids": "symbol"}
    if kind == 1:  # normalised X, raw counts in a layer, Ensembl ids
        norm = sp.csr_matrix(np.log1p(x.multiply(1e4 / np.maximum(x.sum(axis=1), 1)).toarray()).astype(np.float32))
        a = ad.AnnData(norm, obs=obs, var=pd.DataFrame({"symbol": symbols}, index=list(table.ensembl)))
        a.layers["counts"] = x
        a.write_h5ad(dsdir / f"{name}.h5ad")
        return entry | {"path": f"datasets/{name}.h5ad", "format": "h5ad", "counts": "layers/counts",
                        "gene_ids": "ensembl"}  # fmt: skip
    if kind == 2:  # Cell Ranger folder + a metadata csv
        mtx = dsdir / f"{name}_mtx"
        mtx.mkdir(exist_ok=True)
        with gzip.open(mtx / "matrix.mtx.gz", "wb") as fh:
            scipy.io.mmwrite(fh, sp.coo_matrix(x.T.astype(np.int64)))
        pd.DataFrame({"id": list(table.ensembl), "sym": symbols, "t": "Gene Expression"}).to_csv(
            mtx / "features.tsv.gz", sep="\t", header=False, index=False)
        pd.Series(obs.index).to_csv(mtx / "barcodes.tsv.gz", header=False, index=False)
        obs.to_csv(dsdir / f"{name}_metadata.csv")
        return entry | {"path": f"datasets/{name}_mtx", "format": "10x_mtx", "obs_path": f"datasets/{name}_metadata.csv",
                        "gene_ids": "symbol"}  # fmt: skip
    dense = pd.DataFrame(x.T.toarray().astype(np.int32), index=symbols, columns=obs.index)
    dense.to_csv(dsdir / f"{name}.csv.gz")
    obs.to_csv(dsdir / f"{name}_metadata.csv")
    return entry | {"path": f"datasets/{name}.csv.gz", "format": "csv", "orientation": "genes_x_cells",
                    "obs_path": f"datasets/{name}_metadata.csv", "gene_ids": "symbol"}  # fmt: skip


def logit_normal_mean(median: float, sd: float) -> float:
    """Mean of a fraction whose logit is normal around ``logit(median)`` with ``sd`` (Gauss-Hermite quadrature)."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    return float((w / w.sum() / (1 + np.exp(-(np.log(median / (1 - median)) + sd * x)))).sum())


def generate(out: str | Path, n_cells: int = 8000, n_datasets: int = 8, seed: int = 0, extra_types: bool = False,
             droplet_neutrophil_capture: float = 1.0, doublet_rate: float = 0.0, sorted_share: float = 0.0,
             hvg_only_share: float = 0.0, deposit_genes: int = HVG_DEPOSIT) -> Path:
    """Write one independent cohort to ``out``; returns the path of its ingest.yaml. ``extra_types``: tissues also
    hold mast, plasma and dendritic cells (:data:`EXTRA_MARKERS`), types outside atlas's marker panel (a different
    cohort: the generator's random draws change). ``droplet_neutrophil_capture``: the neutrophils' share of a
    sample on droplet platforms (10x) is the tissue's share times this (droplet chemistries lose most
    neutrophils: 0.1 gives ~1-2 % neutrophils there, as in many public 10x tumour data sets); 1 leaves the
    cohort unchanged. ``doublet_rate``: the share of each droplet sample's cells that are heterotypic doublets
    (half of it on the other platforms; ``truth_cell_type`` ``doublet``, the pair in ``truth_doublet``); drawn
    from their own random stream, so every other cell is the cohort of rate 0. ``sorted_share``: that share of the
    studies (rounded; chosen at random) sorted their neutrophils: each of their samples is 85-97 % neutrophils
    (:data:`SORT_PURITY`), drawn from its own random stream, so the other studies are those of share 0.
    ``hvg_only_share``: that share of the studies (rounded; chosen from their own random stream) hold only their
    ``deposit_genes`` most variable genes (:func:`_deposited_genes`; 500: as small as a targeted panel); their cells
    and counts do not change."""
    out = Path(out)
    rng = np.random.default_rng(10_000 + seed)
    drng = np.random.default_rng([10_000 + seed, 1])  # doublets only: the rest of the cohort does not move
    srng = np.random.default_rng([10_000 + seed, 2])  # sorted studies only, likewise
    w = World(rng, n_datasets, extra_types)
    des = _design(rng, n_cells, n_datasets)
    sorted_ds = set(srng.choice(n_datasets, int(round(sorted_share * n_datasets)), replace=False).tolist())
    hrng = np.random.default_rng([10_000 + seed, 4])  # which studies deposited HVGs only
    hvg_ds = set(hrng.choice(n_datasets, int(round(hvg_only_share * n_datasets)), replace=False).tolist())
    sd = PATIENT_LOGIT_SD
    f_pat = {}
    for p, grp in des.groupby("patient", sort=False):
        m = w.cancer_mean[grp["cancer_type"].iloc[0]]
        f_pat[p] = float(1 / (1 + np.exp(-(np.log(m / (1 - m)) + rng.normal(0, sd)))))
    entries, patients = [], []
    for (d, name), grp in des.groupby(["d", "dataset"], sort=True):
        parts = []
        for row in grp.itertuples():
            part = _sample(rng, w, row, f_pat[row.patient], droplet_neutrophil_capture, doublet_rate, drng)
            if d in sorted_ds:  # drawn after the unsorted sample, which keeps the main stream where it was
                part = _sample(srng, w, row, f_pat[row.patient], droplet_neutrophil_capture, doublet_rate,
                               np.random.default_rng([10_000 + seed, 3, row.Index]), purity=srng.uniform(*SORT_PURITY))
            parts.append(part)
        x = sp.vstack([p[0] for p in parts]).tocsr()
        obs = pd.concat([p[1] for p in parts], ignore_index=True)
        species = grp["species"].iloc[0]
        genes = _deposited_genes(x, deposit_genes) if d in hvg_ds else None
        entries.append(_write(out, int(d), name, species, x, obs, w.table, genes))
        for pid, o in obs.groupby("subject", sort=True):
            tum = o[(o["site"] == "Tumor") & (o["truth_cell_type"] == "neutrophil")]
            patients.append({"dataset": name, "patient": pid, "cancer_type": grp["cancer_type"].iloc[0],
                             "species": species, "platform": grp["platform"].iloc[0],
                             "expected_t3_fraction": f_pat[pid],
                             "realised_t3_fraction": (tum["truth_state"] == "T3").mean() if len(tum) else np.nan,
                             "n_tumour_neutrophils": len(tum), "n_cells": len(o)})  # fmt: skip
    truth = out / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    pat = pd.DataFrame(patients)
    pat.to_csv(truth / "patients.csv", index=False)
    # patients' fractions are logit-normal around the cancer type's centre: its median; their population mean,
    # what a mean over patients estimates, lies a little towards 0.5
    ct = pd.DataFrame({"cancer_type": list(CANCERS), "name": list(CANCERS.values()),
                       "mean_t3_fraction": [logit_normal_mean(w.cancer_mean[c], sd) for c in CANCERS],
                       "median_t3_fraction": [w.cancer_mean[c] for c in CANCERS]})  # fmt: skip
    ct["n_patients"] = ct["cancer_type"].map(pat.groupby("cancer_type").size()).fillna(0).astype(int)
    ct["n_tumour_neutrophils"] = ct["cancer_type"].map(pat.groupby("cancer_type")["n_tumour_neutrophils"].sum())
    ct.to_csv(truth / "cancer_types.csv", index=False)
    (truth / "generator.json").write_text(json.dumps({"generator": "scripts/independent_cohort.py", "seed": seed,
                                                      "n_cells": int(des["n"].sum()), "n_datasets": n_datasets,
                                                      "dropped_markers": w.dropped, "extra_types": extra_types,
                                                      "droplet_neutrophil_capture": droplet_neutrophil_capture,
                                                      "doublet_rate": doublet_rate,
                                                      "sorted_datasets": sorted(des.loc[des["d"].isin(sorted_ds),
                                                                                        "dataset"].unique()),
                                                      "deposit_genes": deposit_genes,
                                                      "hvg_only_datasets": sorted(des.loc[des["d"].isin(hvg_ds),
                                                                                          "dataset"].unique()),
                                                      }, indent=1))  # fmt: skip
    cfg = {"datasets": entries, "keep_obs": ["truth_*"]}
    path = out / "ingest.yaml"
    path.write_text("# independent cohort (scripts/independent_cohort.py); truth_* columns kept for evaluation only\n"
                    + yaml.safe_dump(cfg, sort_keys=False))  # fmt: skip
    return path


def oracle_figures(store: str | Path, seed: int, n_datasets: int = 8, extra_types: bool = False) -> dict[str, float]:
    """What the cohort's own programmes reach on the true neutrophils of an ingested store (the task's ceiling).

    The log-normalised expression of each programme's genes, weighted by their true log folds (the T3
    programme minus the naive one; the T3, naive and drift programmes for the pseudotime): AUROC of T3 and of
    each side state, Spearman with the true pseudotime. A method that knows nothing of the generator should
    not be expected above these.
    """
    import anndata as ad
    import scanpy as sc
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    w = World(np.random.default_rng(10_000 + seed), n_datasets, extra_types)
    a = ad.read_h5ad(store)
    a = a[(a.obs["truth_cell_type"].astype(str) == "neutrophil").to_numpy()].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sym, pos = np.asarray(w.table.symbols), {g: i for i, g in enumerate(a.var_names)}

    def score(program) -> np.ndarray:
        ii, lfc = program
        keep = [k for k, g in enumerate(sym[ii]) if g in pos]
        x = a[:, [pos[sym[ii][k]] for k in keep]].X
        return np.asarray(x @ lfc[keep]).ravel()

    state = a.obs["truth_state"].astype(str).to_numpy()
    t3 = score(w.t3) + score(w.naive)
    out = {"oracle_t3_auroc": roc_auc_score(state == "T3", t3),
           "oracle_pseudotime_spearman": spearmanr(t3 + score(w.drift), a.obs["truth_pseudotime"]).statistic}  # fmt: skip
    side = {"T3": t3}
    for name, program in (("immature", w.immature), ("interferon", w.ifn), ("antigen_presenting", w.ap)):
        side[name] = score(program)
        out[f"oracle_{name}_auroc"] = roc_auc_score(state == name, side[name])
    out["oracle_state_macro_f1"] = _oracle_state_f1(state, side)
    return {k: round(float(v), 3) for k, v in out.items()}


def _oracle_state_f1(state: np.ndarray, side: dict[str, np.ndarray]) -> float:
    """Macro-F1 of states called from the true programmes' scores, each side state at the threshold that
    maximises its own F1 against the truth (optimistic: the truth chooses the thresholds); a cell above several
    thresholds takes the state it exceeds most (in that score's standard deviations), a cell above none is
    mature. A ceiling for per-cell state calls at this depth, not a method."""
    from sklearn.metrics import f1_score

    margin = np.full((len(state), len(side)), -np.inf)
    for j, (name, s) in enumerate(side.items()):
        cuts = np.unique(np.quantile(s, np.linspace(0.5, 0.999, 200)))
        best = max(cuts, key=lambda c: f1_score(state == name, s > c, zero_division=0))
        margin[:, j] = np.where(s > best, (s - best) / (s.std() or 1.0), -np.inf)
    names = np.array(list(side), dtype=object)
    call = np.where(np.isfinite(margin.max(axis=1)), names[margin.argmax(axis=1)], "mature")
    return f1_score(state, call, labels=sorted(set(state)), average="macro", zero_division=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write the cohort to (with --oracle: an ingested store)")
    ap.add_argument("--n-cells", type=int, default=8000)
    ap.add_argument("--n-datasets", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra-types", action="store_true",
                    help="tissues also hold mast, plasma and dendritic cells (types outside atlas's marker panel)")
    ap.add_argument("--droplet-neutrophil-capture", type=float, default=1.0, metavar="F",
                    help="neutrophils' share on droplet platforms times F (0.1: ~1-2 %% of a 10x sample's cells)")
    ap.add_argument("--doublet-rate", type=float, default=0.0, metavar="R",
                    help="share of a droplet sample's cells that are heterotypic doublets (half that elsewhere)")
    ap.add_argument("--sorted-share", type=float, default=0.0, metavar="S",
                    help="share of the studies that sorted their neutrophils (85-97 %% of their cells; 1: all)")
    ap.add_argument("--hvg-only-share", type=float, default=0.0, metavar="S",
                    help="share of the studies whose files hold only their most variable genes (--deposit-genes)")
    ap.add_argument("--deposit-genes", type=int, default=HVG_DEPOSIT, metavar="N",
                    help=f"genes an HVG-only study keeps (default {HVG_DEPOSIT}, the scanpy tutorial's)")
    ap.add_argument("--oracle", action="store_true", help="print oracle_figures of the store OUT instead")
    a = ap.parse_args()
    if a.droplet_neutrophil_capture <= 0:
        ap.error(f"--droplet-neutrophil-capture {a.droplet_neutrophil_capture}: a share multiplier, > 0 (0.1: few)")
    if not 0 <= a.doublet_rate < 0.5:
        ap.error(f"--doublet-rate {a.doublet_rate}: a share of cells in [0, 0.5)")
    if not 0 <= a.sorted_share <= 1:
        ap.error(f"--sorted-share {a.sorted_share}: a share of the studies in [0, 1]")
    if not 0 <= a.hvg_only_share <= 1:
        ap.error(f"--hvg-only-share {a.hvg_only_share}: a share of the studies in [0, 1]")
    if a.deposit_genes < 50:
        ap.error(f"--deposit-genes {a.deposit_genes}: at least 50 genes")
    print(oracle_figures(a.out, a.seed, a.n_datasets, a.extra_types) if a.oracle
          else generate(a.out, a.n_cells, a.n_datasets, a.seed, a.extra_types, a.droplet_neutrophil_capture,
                        a.doublet_rate, a.sorted_share, a.hvg_only_share, a.deposit_genes))


if __name__ == "__main__":
    main()
