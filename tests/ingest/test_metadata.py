"""Cell metadata onto the obs schema."""

from __future__ import annotations

import pandas as pd
import pytest

from atlas.core.errors import InputDataError
from atlas.ingest.metadata import map_obs
from atlas.ingest.settings import SCHEMA_FIELDS, DatasetConfig


def _obs():
    return pd.DataFrame(
        {
            "Sample": ["s1", "s1", "s2", "s2"],
            "patient_id": ["p1", "p1", "p2", "p2"],
            "Tissue": ["Tumor", "NAT", "PBMC", "primary tumour"],
            "tech": ["10X", "10X", "10X", "10X"],
            "truth_state": [0, 1, 2, 1],
            "other": [1, 2, 3, 4],
        },
        index=["a", "b", "c", "d"],
    )


def _ds(**kw):
    base = dict(
        id="lung1",
        path="x.h5ad",
        obs_columns={"sample_id": "Sample", "tissue": "Tissue", "platform": "tech"},
        constants={"cancer_type": "LUAD"},
        value_maps={"platform": {"10X": "10x_3prime"}},
    )
    base.update(kw)
    return DatasetConfig(**base)


def test_schema_mapping():
    df = map_obs(_obs(), _ds())
    assert list(df.columns) == [*SCHEMA_FIELDS, "truth_state"]
    assert list(df.index) == ["lung1:a", "lung1:b", "lung1:c", "lung1:d"]
    assert list(df["tissue"]) == ["tumour", "adjacent_normal", "blood", "tumour"]
    assert set(df["platform"]) == {"10x 3'"} and set(df["cancer_type"]) == {"LUAD"}  # atlas's labels
    assert set(df["species"]) == {"human"} and set(df["dataset_id"]) == {"lung1"}
    assert list(df["sample_id"]) == ["s1", "s1", "s2", "s2"]
    for f in SCHEMA_FIELDS:
        assert isinstance(df[f].dtype, pd.CategoricalDtype)
    assert df["truth_state"].tolist() == [0, 1, 2, 1]


def test_missing_field_names_columns():
    ds = _ds(constants={})
    with pytest.raises(InputDataError, match=r"'lung1'.*'cancer_type'.*Sample.*obs_columns.*constants"):
        map_obs(_obs(), ds)


def test_configured_column_absent():
    ds = _ds(obs_columns={"sample_id": "sample_name"})
    with pytest.raises(InputDataError, match=r"'lung1'.*'sample_name'.*columns: \['Sample'"):
        map_obs(_obs(), ds)


def test_unknown_tissue_says_how_to_map():
    obs = _obs()
    obs.loc["a", "Tissue"] = "lymph node"
    with pytest.raises(InputDataError, match=r"'lung1'.*\['lymph node'\].*value_maps: \{tissue"):
        map_obs(obs, _ds())
    ds = _ds(value_maps={"tissue": {"lymph node": "tumour"}})
    assert map_obs(obs, ds)["tissue"].iloc[0] == "tumour"


def test_species_column_must_agree():
    obs = _obs().assign(species="Mus musculus")
    with pytest.raises(InputDataError, match=r"'lung1'.*'Mus musculus'.*species: human"):
        map_obs(obs, _ds())
    assert set(map_obs(obs.assign(species="Homo sapiens"), _ds())["species"]) == {"human"}


def test_duplicate_barcodes():
    obs = _obs()
    obs.index = ["a", "b", "a", "c"]
    with pytest.raises(InputDataError, match=r"'lung1'.*\['a'\]"):
        map_obs(obs, _ds())


def test_missing_values_in_column():
    obs = _obs()
    obs.loc["b", "Sample"] = None
    with pytest.raises(InputDataError, match=r"'lung1'.*1 cells have no value in column 'Sample'"):
        map_obs(obs, _ds())


@pytest.mark.parametrize("given, label", [
    ("pancreatic ductal adenocarcinoma", "PDAC"), ("Pancreatic Cancer", "PDAC"), ("paad", "PDAC"),
    ("Non-small cell lung cancer", "NSCLC"), ("non_small_cell_lung_cancer", "NSCLC"), ("nsclc", "NSCLC"),
    ("lung adenocarcinoma", "LUAD"), ("SKCM", "melanoma"), ("Cutaneous  melanoma ", "melanoma"),
    ("Hepatocellular carcinoma", "HCC"), ("colorectal cancer", "CRC"), ("breast cancer", "BRCA"),
])
def test_cancer_type_spellings_read_as_atlas_labels(given, label, caplog):
    obs = _obs().assign(disease=given)
    with caplog.at_level("INFO", logger="atlas.ingest.values"):
        df = map_obs(obs, _ds(constants={}, obs_columns={"sample_id": "Sample", "tissue": "Tissue",
                                                         "platform": "tech", "cancer_type": "disease"}))
    assert set(df["cancer_type"]) == {label}
    assert (f"{given!r} -> {label}" in caplog.text) == (given != label)


def test_unlisted_cancer_type_kept_as_given_and_said_unless_it_says_unknown(caplog):
    with caplog.at_level("INFO", logger="atlas.ingest.values"):
        df = map_obs(_obs(), _ds(constants={"cancer_type": "Glioma grade 4"}))
        assert set(df["cancer_type"]) == {"Glioma grade 4"}
        assert "cancer_type 'Glioma grade 4' not in atlas's list (atlas/catalogue/data/cancer_types.csv)" in caplog.text
        caplog.clear()
        assert set(map_obs(_obs(), _ds(constants={"cancer_type": "unknown"}))["cancer_type"]) == {"unknown"}
    assert "not in atlas's list" not in caplog.text
    # a data set's value_maps come first: a subtype can be pooled with its parent on purpose
    ds = _ds(value_maps={"platform": {"10X": "10x_3prime"}, "cancer_type": {"LUAD": "non-small cell lung cancer"}})
    assert set(map_obs(_obs(), ds)["cancer_type"]) == {"NSCLC"}


def test_unify_spellings_across_data_sets():
    from atlas.ingest.values import unify_spellings

    frames = [pd.DataFrame({"cancer_type": pd.Categorical(v)}) for v in (["Glioma", "HCC"], ["glioma", "GLIOMA"],
                                                                          ["low-grade_glioma"])]
    unify_spellings(frames, "cancer_type")
    assert [sorted(f["cancer_type"].cat.categories) for f in frames] == [["Glioma", "HCC"], ["Glioma"],
                                                                        ["low-grade_glioma"]]


def test_the_cancer_type_vocabulary_is_one_to_one_and_knows_the_simulators_spellings():
    from atlas.catalogue.vocabularies import CANCER_TYPES, PLATFORMS, spelling_key
    from atlas.simulate.biology import CANCER_TYPES as SIMULATED_CANCERS
    from atlas.simulate.biology import PLATFORMS as SIMULATED_PLATFORMS

    for vocabulary in (CANCER_TYPES, PLATFORMS):
        table = vocabulary.table
        assert table["code"].map(spelling_key).is_unique
        for row in table.itertuples():  # every spelling reads as its own row's label (no spelling names two)
            assert {vocabulary.label(s) for s in (row.code, row.name, *row.synonyms)} == {row.code}
    for code, (_, long_name) in SIMULATED_CANCERS.items():
        assert CANCER_TYPES.label(code) == code and CANCER_TYPES.label(long_name) == code
    assert all(PLATFORMS.label(p) for p in SIMULATED_PLATFORMS)  # the simulator's platforms are listed


@pytest.mark.parametrize("given, label", [
    ("10x_3p", "10x 3'"), ("10X Genomics 3\u2019", "10x 3'"), ("10x_3prime_v3", "10x 3' v3"), ("10x 5' v2", "10x 5' v2"),
    ("Chromium Single Cell 5'", "10x 5'"), ("SMART-Seq2", "Smart-seq2"), ("smartseq2", "Smart-seq2"),
    ("SeqWell", "Seq-Well"), ("BD_Rhapsody", "BD Rhapsody"), ("Drop-Seq", "Drop-seq"),
])
def test_platform_spellings_read_as_atlas_labels(given, label):
    df = map_obs(_obs().assign(tech=given), _ds(value_maps={}))
    assert set(df["platform"]) == {label}


def test_a_10x_without_chemistry_is_not_guessed():
    assert set(map_obs(_obs().assign(tech="10X"), _ds(value_maps={}))["platform"]) == {"10X"}


def test_values_take_the_spelling_of_known_ones_that_name_the_same_thing():
    from atlas.ingest.values import to_known_spellings

    got, to = to_known_spellings(pd.Series(["10x 3'", "Chromium 3'", "seqwell", "BD Rhapsody", "Glioma", "new"]),
                                 ["10x_3p", "SeqWell", "BD Rhapsody", "glioma"], "platform")
    assert list(got) == ["10x_3p", "10x_3p", "SeqWell", "BD Rhapsody", "glioma", "new"]
    assert to == {"10x 3'": "10x_3p", "Chromium 3'": "10x_3p", "seqwell": "SeqWell", "Glioma": "glioma"}


def test_missing_fields_are_named_together_with_the_columns_that_look_like_them():
    obs = pd.DataFrame({"subject": ["S1", "S1", "S2", "S2"], "library": ["L1", "L1", "L2", "L3"],
                        "indication": ["pancreatic ductal adenocarcinoma"] * 4, "site": ["Tumor", "Blood"] * 2,
                        "assay": ["10x_3p"] * 4, "barcode_sample": ["a", "b", "c", "d"],
                        "truth_tissue": ["tumour"] * 4}, index=["a", "b", "c", "d"])  # fmt: skip
    with pytest.raises(InputDataError) as err:
        map_obs(obs, DatasetConfig(id="s1", path="x.h5ad"))  # suggestions are never applied
    msg = str(err.value)
    assert "no value for schema fields 'sample_id', 'patient_id', 'cancer_type', 'tissue', 'platform'" in msg
    assert "cancer_type: column 'indication' looks like it (its values are cancer types atlas knows)" in msg
    assert "tissue: column 'site' looks like it (its values are tissues atlas knows)" in msg
    assert "patient_id: column 'subject' looks like it (its name)" in msg
    assert ("obs_columns: {sample_id: library, patient_id: subject, cancer_type: indication, tissue: site, "
            "platform: assay}") in msg
    # a column already mapped, a truth_* column and one value per cell are never suggested
    with pytest.raises(InputDataError) as err:
        map_obs(obs.rename(columns={"library": "sample"}).assign(sample=list("abcd")),
                DatasetConfig(id="s1", path="x.h5ad", obs_columns={"tissue": "site"}))
    msg = str(err.value)
    assert "'tissue'" not in msg.split(":")[1] and "sample_id: column" not in msg and "truth_tissue" not in msg.split("]")[1]
