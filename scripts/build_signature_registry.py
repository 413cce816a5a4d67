"""Build atlas/catalogue/data/signatures.yaml from the team's science notes (shared/science/neutrophil_signatures.md).

Run once when the notes change:  python scripts/build_signature_registry.py ../shared/science/neutrophil_signatures.md
Each set keeps its provenance (citation, version, species, kind = published | published_markers | proxy).
Gene symbols are kept as published; the registry maps outdated symbols at load time.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ZILIONIS = "Zilionis R et al., Immunity 50:1317 (2019), doi:10.1016/j.immuni.2019.03.009"
LUCA = "Salcher S et al., Cancer Cell 40:1503 (2022), doi:10.1016/j.ccell.2022.10.008 (icbi-lab/luca gene set table)"
WU = "Wu Y et al., Cell 187:1422 (2024), doi:10.1016/j.cell.2024.02.005"
XUE = "Xue R et al., Nature 612:141 (2022), doi:10.1038/s41586-022-05400-x"
XIE = "Xie X et al., Nat Immunol 21:1119 (2020), doi:10.1038/s41590-020-0736-z"
SCHULTE = "Schulte-Schrepping J et al., Cell 182:1419 (2020), doi:10.1016/j.cell.2020.08.001 (as collected by LuCA)"
MSIGDB = "Liberzon A et al., Cell Syst 1:417 (2015); MSigDB hallmark collection"
JITC = "J Immunother Cancer 10:e004210 (2022), 31-gene neutrophil signature (as used in LuCA)"
VEGLIA = "Veglia F et al., J Exp Med 218:e20201803 (2021), Table 1"
NG = "Ng MSF et al., Science 383:eadf6493 (2024), doi:10.1126/science.adf6493"
CEREZO = "Cerezo-Wallis D et al., Nature (2025), doi:10.1038/s41586-025-09807-0"


def genes(text: str) -> list[str]:
    out = []
    for g in text.split(","):
        g = g.strip().rstrip(".").strip()
        if g and g not in out:
            out.append(g)
    return out


def bullet(md: str, head: str) -> list[str]:
    """Genes of a '- **head ...**: g1, g2' bullet (the part after the last '**...:')."""
    for line in md.splitlines():
        if line.startswith(f"- **{head}"):
            return genes(re.split(r"\)?\*\*:?\s*(?:\(\d+ genes\):)?", line)[-1])
    raise KeyError(head)


def dotted(md: str, key: str) -> list[str]:
    """Genes of a 'key: g1, g2 ·' entry in a '·'-separated paragraph."""
    flat = " ".join(md.split("\n")).replace("**", "")
    m = re.search(rf"(?:^|·|\s){re.escape(key)}:\s*([^·]+)", flat)
    if not m:
        raise KeyError(key)
    text = re.split(r"\s{2,}|\s-\s|\.\s", m.group(1))[0]
    text = re.sub(r"[a-z-]+ \(|;[^)]*\)", "", text)  # 'ribosomal-high (RPL3, ...; note)' -> 'RPL3, ...'
    return [g for g in genes(text) if re.fullmatch(r"[A-Za-z0-9.-]+", g)]


def entry(genes_, desc, citation, kind="published", version=None, species="human", extras=None):
    e = {"description": desc, "citation": citation, "kind": kind, "species": species, "genes": genes_}
    if version:
        e["version"] = version
    if extras:
        e["optional_genes"] = extras
    return e


def main(path: str) -> None:
    md = Path(path).read_text()
    reg: dict[str, dict] = {}
    t3 = genes("VEGFA, SPP1, CCL3, CCL4, CD274, OLR1, PLAU, PLPP3, PLIN2, BHLHE40, HILPDA, BNIP3, BNIP3L, LDHA, "
               "PGK1, SLC2A1, ENO1, TPI1, PKM, CSF1, ICAM1, CD83, CXCR4")
    reg["T3_proxy"] = entry(t3, "Human proxy of the dcTRAIL-R1+ T3 reprogrammed tumour neutrophil state "
                            "(angiogenic, hypoxic, glycolytic); NOT a published list", NG, kind="proxy",
                            version="atlas-2026.1", extras=["TNFRSF10C", "TNFRSF10D"])
    reg["blood_like"] = entry(genes("S100A12, CXCR2, SELL, TXNIP, CXCR1, CSF3R, FCGR3B, PTGS2"),
                              "Blood / naive neutrophil contrast set for the reprogramming axis (NAN-up genes of "
                              "LuCA plus S100A12 and TXNIP)", LUCA + "; " + NG, kind="proxy", version="atlas-2026.1")
    for key, desc in [("HALLMARK_HYPOXIA", "Hypoxia"), ("HALLMARK_GLYCOLYSIS", "Glycolysis"),
                      ("HALLMARK_ANGIOGENESIS", "Angiogenesis"),
                      ("HALLMARK_TNFA_SIGNALING_VIA_NFKB", "TNF-alpha signalling via NF-kB"),
                      ("HALLMARK_INTERFERON_ALPHA_RESPONSE", "Interferon alpha response")]:
        reg[key] = entry(bullet(md, key), f"MSigDB hallmark: {desc}", MSIGDB, version="MSigDB v7.0")
    for i, desc in enumerate(["classical (S100A12+, MMP9+)", "interferon", "CXCR2+ TXNIP+",
                              "HLA-DR+ CD74+ NR4A2+ (antigen-presenting)", "CCL3+ CSF1+ glycolysis/hypoxia"], 1):
        reg[f"Zilionis_hN{i}"] = entry(bullet(md, f"hN{i}"), f"Zilionis 2019 human lung cancer neutrophil state hN{i}: {desc}",
                                       ZILIONIS)
        reg[f"LuCA_hN{i}_short"] = entry(dotted(md, f"hN{i}"), f"Short hN{i} set used by the LuCA atlas", LUCA)
    for key in ["NAN all", "TAN all", "NAN-1", "NAN-2", "NAN-3", "TAN-1", "TAN-2", "TAN-3", "TAN-4"]:
        reg["LuCA_" + key.replace(" ", "_").replace("-", "")] = entry(
            dotted(md, key),
            f"LuCA neutrophil state markers {key}", LUCA, kind="published_markers")
    reg["LuCA_TAN_vs_NAN_up"] = entry(genes("OLR1, VEGFA, CD83, ICAM1, CXCR4"), "TAN-up candidates (tumour vs normal-adjacent)",
                                      LUCA, kind="published_markers")
    reg["LuCA_NAN_vs_TAN_up"] = entry(genes("CXCR1, CXCR2, PTGS2, SELL, CSF3R, FCGR3B"), "NAN-up candidates",
                                      LUCA, kind="published_markers")
    wu = {"HLA-DR+CD74+": "HLA-DRA, HLA-DRB1, CD74", "IL1R2+NFKBIA+": "IL1R2, NFKBIA", "CXCL8+": "CXCL8",
          "IFIT1+ISG15+": "IFIT1, ISG15, CD274", "CSF3R+": "CSF3R", "S100A12+": "S100A12", "TXNIP+": "TXNIP",
          "MMP9+CEACAM8+": "MMP9, CEACAM8", "VEGFA+SPP1+": "VEGFA, SPP1"}
    for k, v in wu.items():
        reg["Wu_" + re.sub(r"[^A-Za-z0-9]+", "_", k).strip("_")] = entry(
            genes(v), f"Wu 2024 pan-cancer neutrophil state {k} (markers from the state name)", WU, kind="published_markers")
    xue = {"Neu_02_S100A12": "S100A12", "Neu_03_ISG15": "ISG15", "Neu_04_TXNIP": "TXNIP", "Neu_05_ELL2": "ELL2",
           "Neu_06_PTGS2": "PTGS2", "Neu_01_MMP8": "MMP8", "Neu_07_APOA2": "APOA2", "Neu_08_CD74": "CD74",
           "Neu_09_IFIT1": "IFIT1, CD274", "Neu_10_SPP1": "SPP1", "Neu_11_CCL4": "CCL4, CCL3"}
    for k, v in xue.items():
        reg["Xue_" + k] = entry(genes(v), f"Xue 2022 liver cancer neutrophil state {k} (marker genes)", XUE,
                                kind="published_markers")
    for key, name in [("Maturation", "maturation"), ("Aging", "aging"), ("Azurophil granule", "azurophil_granule"),
                      ("Specific granule", "specific_granule"), ("Gelatinase granule", "gelatinase_granule"),
                      ("Secretory vesicle", "secretory_vesicle")]:
        line = next(ln for ln in md.splitlines() if ln.startswith(f"- {key}:"))
        reg[f"Xie_{name}"] = entry(genes(line.split(":", 1)[1]), f"Neutrophil {key.lower()} genes", XIE)
    for key in ["mature_0", "mature_1 (IFN)", "mature_2", "immature", "pro_neu", "pre_neu", "proliferating"]:
        name = key.split(" ")[0]
        reg[f"SchulteSchrepping_{name}"] = entry(dotted(md, key), f"Blood neutrophil state {key}", SCHULTE)
    ident = next(ln for ln in md.splitlines() if ln.startswith("- Neutrophil-associated signature"))
    reg["neutrophil_identity_JITC2022"] = entry(genes(ident.split("):", 1)[1]), "31-gene neutrophil identity signature", JITC)
    mdsc = next(ln for ln in md.splitlines() if ln.startswith("- PMN-MDSC genes"))
    reg["PMN_MDSC_Veglia2021"] = entry(genes(mdsc.split(":", 1)[1]), "PMN-MDSC genes", VEGLIA)
    mouse = {"PreNeu": "Mki67, Ltf", "Immature": "Mmp8, Cebpe", "Immuno_silent": "Cd52", "IFN_response": "Ifit1, Cd274",
             "Immunosuppressive_I": "Cd14, Ptgs2", "Immunosuppressive_II": "Vegfa, Cd274",
             "Antigen_presenting": "H2-Aa, H2-Ab1, H2-Eb1, Cd74"}
    for k, v in mouse.items():
        reg[f"CerezoWallis_mouse_{k}"] = entry(genes(v), f"Mouse neutrophil atlas hub markers: {k}", CEREZO,
                                               kind="published_markers", species="mouse")
    out = Path(__file__).resolve().parents[1] / "atlas" / "catalogue" / "data" / "signatures.yaml"
    header = ("# Signature registry shipped with atlas. Generated by scripts/build_signature_registry.py from\n"
              "# shared/science/neutrophil_signatures.md; edit the notes and rerun rather than editing by hand.\n")
    out.write_text(header + yaml.safe_dump(reg, sort_keys=False, width=120))
    print(f"wrote {len(reg)} signatures to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/science/neutrophil_signatures.md")
