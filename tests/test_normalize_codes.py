"""Properties of the integer-code helpers the normalizer builds every column with.

They are private, but every output column of the reader rests on them: a wrong
combination code would silently give rows the wrong unit or range.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import labinterp.normalize  # noqa: F401  (the module object is taken from sys.modules)

normalize = sys.modules["labinterp.normalize"]

# a part: how many distinct values it has, and each row's value
parts = st.integers(min_value=1, max_value=40).flatmap(
    lambda width: st.tuples(st.just(width), st.lists(st.integers(0, width - 1)))
)


@settings(max_examples=200, deadline=None)
@given(st.lists(parts, min_size=1, max_size=6), st.integers(min_value=1, max_value=300))
def test_joint_gives_each_row_its_own_combination(spec, n):
    coded = []
    rng = np.random.default_rng(n)
    for k, (width, _) in enumerate(spec):
        codes = rng.integers(0, width, size=n)
        coded.append(normalize._Coded(codes, [f"p{k}v{i}" for i in range(width)]))
    joint = normalize._joint(*coded)
    expected = [tuple(c.values[c.codes[row]] for c in coded) for row in range(n)]
    assert [joint.values[code] for code in joint.codes] == expected
    assert len(set(joint.values)) == len(joint.values)  # one code per combination


def test_joint_renumbers_when_the_packed_key_would_outgrow_the_bitmap():
    n = 50  # bound 4 * 50 + 1024 = 1224: three parts of 20 values cannot share one key
    rng = np.random.default_rng(1)
    coded = [
        normalize._Coded(rng.integers(0, 20, size=n), [f"{k}:{i}" for i in range(20)])
        for k in range(3)
    ]
    joint = normalize._joint(*coded)
    for row in range(n):
        assert joint.values[joint.codes[row]] == tuple(c.values[c.codes[row]] for c in coded)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=200), st.booleans())
def test_first_appearance_orders_keys_as_factorize_does(keys, hashed):
    keys = np.asarray(keys, dtype=np.int64)
    bound = 10**9 if hashed else 31  # above the bitmap bound: the factorize fallback
    numbers = normalize._first_appearance(keys, bound)
    factorized = pd.factorize(keys)[0]
    # the same partition of the rows, and the same order of the groups
    assert len(set(zip(numbers, factorized, strict=True))) == len(set(factorized))
    assert np.array_equal(np.argsort(numbers, kind="stable"), np.argsort(factorized, kind="stable"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", " a", "", None]), min_size=1, max_size=30))
def test_compact_and_rows_equal_are_the_same_from_pyarrow_text(values):
    distinct = list(dict.fromkeys(values))  # distinct spellings, as a coded column holds
    codes = np.array([distinct.index(v) for v in values], dtype=np.int64)
    # the same column, once as Python values and once as pyarrow text, each stripped
    as_list = normalize._Coded(codes, [None if v is None else v.strip() for v in distinct])
    as_text = normalize._Coded(codes, text=pa.array(distinct, pa.large_string())).via_pandas(
        lambda s: s.str.strip()
    )
    for coded in (as_list, as_text):
        compact = coded.compact()
        assert [compact.values[c] for c in compact.codes] == [coded.values[c] for c in codes]
        assert len(set(compact.values)) == len(compact.values)
        assert list(coded.rows_equal("a")) == [v is not None and v.strip() == "a" for v in values]
    assert list(as_list.compact().codes) == list(as_text.compact().codes)
