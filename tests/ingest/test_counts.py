"""Raw-count checks: normalised, negative or missing values are refused with evidence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from atlas.core.errors import InputDataError
from atlas.ingest.counts import check_counts


def _raw(seed=0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.poisson(1.5, (40, 30)).astype(np.float32))


def _check(X):
    check_counts(X, dataset_id="lung3", source="/data/lung3.h5ad", where="X", first_cell=100)


def test_raw_counts_pass():
    _check(_raw())


def test_log_normalised_refused_with_evidence():
    X = _raw()
    sums = np.asarray(X.sum(axis=1)).ravel()
    X = sp.csr_matrix(sp.diags(1e4 / sums) @ X)
    X.data = np.log1p(X.data)
    with pytest.raises(InputDataError) as e:
        _check(X)
    msg = str(e.value)
    for part in (
        "lung3",
        "/data/lung3.h5ad",
        "cells 100-139",
        "normalised or log-transformed",
        "100% of the non-zero values are not whole numbers",
        "expm1 are all ~1e+04",
        "counts: layers/counts",
        "counts: raw",
    ):
        assert part in msg, part


def test_normalised_without_log():
    X = _raw()
    X = sp.csr_matrix(sp.diags(1e4 / np.asarray(X.sum(axis=1)).ravel()) @ X)
    with pytest.raises(InputDataError, match="all sum to the same total"):
        _check(X)


def test_negative_values():
    X = _raw()
    X.data[3] = -2.0
    with pytest.raises(InputDataError, match=r"lung3.*1 negative values \(min -2\)"):
        _check(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(bad):
    X = _raw()
    X.data[5] = bad
    with pytest.raises(InputDataError, match=r"lung3.*lung3\.h5ad.*(NaN|infinite)"):
        _check(X)


def test_float_noise_of_counts_tolerated():
    X = _raw()
    X.data = X.data + 1e-6
    _check(X)
