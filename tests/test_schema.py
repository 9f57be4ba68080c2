"""Every bad input form gets an InputError naming the feature, what was expected and what arrived."""

import dataclasses
import math
import warnings

import numpy as np
import pytest

from edgeinfer.errors import InputError, SchemaError
from edgeinfer.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    features=(
        Feature("glucose", low=40, high=600, unit="mg/dL"),
        Feature("age", kind="integer", low=18, high=90, unit="years", mutable=False, protected=True),
        Feature("sex", kind="categorical", categories=("female", "male"), protected=True),
    ),
    classes=("low risk", "high risk"),
    favourable="low risk",
)


@pytest.mark.parametrize("form", ["mapping", "list", "array", "frame", "frame row", "list with a category name",
                                  "list of frame rows", "frame row as a namedtuple", "list of namedtuples",
                                  "namedtuples with their index"])
def test_every_input_form_gives_the_same_matrix(form):
    row = {"glucose": 120.0, "age": 50, "sex": "male"}
    values = [120.0, 50.0, 1.0]
    frame = __import__("pandas").DataFrame([{"sex": 1, "age": 50, "glucose": 120.0}])   # not in schema order
    x = {
        "mapping": row,
        "list": values,
        "array": np.array(values),
        "frame": frame,
        "frame row": frame.iloc[0],           # a Series: read by its names, never by position
        "list with a category name": [[120.0, 50, "male"]],
        "list of frame rows": [frame.iloc[0]],                                 # ... in a list too
        "frame row as a namedtuple": next(frame.itertuples(index=False)),     # by its field names
        "list of namedtuples": list(frame.itertuples(index=False)),
        "namedtuples with their index": list(frame.itertuples()),         # its first field, 'Index': no feature
    }[form]
    matrix = SCHEMA.validate(x)[0]
    np.testing.assert_array_equal(matrix, [values])


@pytest.mark.parametrize(
    "x, message",
    [
        ({"glucose": "high", "age": 50, "sex": "male"}, "feature 'glucose' expects a number in [40, 600] mg/dL, got 'high'"),
        ({"glucose": 700, "age": 50, "sex": "male"}, "feature 'glucose' expects a number in [40, 600] mg/dL, got 700"),
        ({"glucose": math.nan, "age": 50, "sex": "male"},
         "feature 'glucose' expects a number in [40, 600] mg/dL, got nan; replace missing or infinite values"),
        ({"glucose": math.inf, "age": 50, "sex": "male"},
         "feature 'glucose' expects a number in [40, 600] mg/dL, got inf; replace missing or infinite values"),
        ({"glucose": 120, "age": 50.5, "sex": "male"}, "feature 'age' expects an integer in [18, 90] years, got 50.5"),
        ({"glucose": 120, "age": 50, "sex": "other"}, "feature 'sex' expects one of 'female' (0), 'male' (1), got 'other'"),
        ({"glucose": 120, "age": 50, "sex": 3}, "feature 'sex' expects one of 'female' (0), 'male' (1), got 3"),
        ({"glucose": 120, "age": 50, "sex": "Male"}, "feature 'sex' expects one of 'female' (0), 'male' (1), got "
         "'Male'; did you mean 'male'? (names are case-sensitive)"),       # as a feature name in the wrong case
        ([120, 50, "femal"], "feature 'sex' expects one of 'female' (0), 'male' (1), got 'femal'; did you mean "
         "'female'?"),
        ({"glucose": 120, "age": 50}, "missing feature 'sex'; every row needs all 3 features"),
        ({"glucos": 120, "age": 50, "sex": 1}, "unknown feature 'glucos'; did you mean 'glucose'?"),
        ([120, 50], "expected 3 features in schema order (glucose, age, sex), got 2 values"),
        (np.zeros(2, np.float32), "expected 3 features in schema order (glucose, age, sex), got 2 values"),
        (np.zeros((1, 4), np.float32), "expected 3 features in schema order (glucose, age, sex), got 4 values"),
        (np.zeros((1, 2, 2), np.float32), "expected a 1-D row or a 2-D batch of 3 features, got a 3-D array"),
        (np.zeros((2, 2, 3)), "expected a 1-D row or a 2-D batch of 3 features, got a 3-D array"),
        ({"glucose": True, "age": 50, "sex": 1}, "feature 'glucose' expects a number in [40, 600] mg/dL, got True"),
    ],
)
def test_bad_input_messages(x, message):
    with pytest.raises(InputError) as info:
        SCHEMA.validate(x)
    assert str(info.value) == message


@pytest.mark.parametrize("name, columns, message", [
    ("glucos", ["glucos", "age", "sex"], "unknown feature 'glucos'; did you mean 'glucose'?"),
    ("glucos", ["glucos", "glucose", "age", "sex"],
     "unknown feature 'glucos'; if it holds the true class, pass --label-column 'glucos'; known features: glucose, "
     "age, sex"),
    ("outcome", ["glucose", "age", "sex", "outcome"],
     "unknown feature 'outcome'; if it holds the true class, pass --label-column 'outcome'; known features: glucose, "
     "age, sex"),
])
def test_an_unknown_column_is_offered_as_the_label_column_only_where_that_can_be_right(name, columns, message):
    """A data file's column 'glucos' beside no 'glucose' was offered first as the label column, which would leave
    glucose missing: the misspelling is its one reading then. Beside 'glucose' it misspells nothing (renamed, glucose
    would be there twice): the label column is its one reading."""
    from edgeinfer.schema import _unknown_feature

    assert _unknown_feature(name, SCHEMA.names, label_option="--label-column", columns=columns) == message


TEN = FeatureSchema(features=tuple(Feature(n) for n in ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5",
                                                        "s6")), classes=("low", "high"))
THIRTEEN = FeatureSchema(features=tuple(Feature(f"x{i}") for i in range(13)), classes=("low", "high"))


@pytest.mark.parametrize("schema, name, message", [
    (TEN, "S5", "unknown feature 'S5'; did you mean 's5'? (names are case-sensitive)"),
    (TEN, "BMI", "unknown feature 'BMI'; did you mean 'bmi'? (names are case-sensitive)"),
    (TEN, "bmI", "unknown feature 'bmI'; did you mean 'bmi'? (names are case-sensitive)"),
    (TEN, "bmx", "unknown feature 'bmx'; did you mean 'bmi'?"),
    (TEN, "outcome", "unknown feature 'outcome'; known features: age, sex, bmi, bp, s1, s2, s3, s4, s5, s6"),
    (THIRTEEN, "outcome", "unknown feature 'outcome'; known features: x0, x1, x2, x3, x4, x5, … (13 in all)"),
])
def test_an_unknown_feature_in_another_case_is_told_its_name(schema, name, message):
    """A header 'S5' got "known features: age, sex, bmi, bp, s1, s2, … (10 in all)", s5 not shown and no hint, and
    'BMI' no "did you mean" while 'bmI' got one (difflib matches case): a name that differs in case alone is now
    matched first, and up to 12 known names are listed in full."""
    from edgeinfer.schema import close_match

    row = {n: 1.0 for n in schema.names if n != close_match(name, schema.names)} | {name: 1.0}   # in its place
    with pytest.raises(InputError) as info:
        schema.validate(row)
    assert str(info.value) == message


def test_an_unknown_name_beside_the_feature_it_resembles_is_not_told_did_you_mean():
    """A row or frame with both 'bmi' and 'BMI' was told "unknown feature 'BMI'; did you mean 'bmi'? (names are
    case-sensitive)": renamed, bmi would be there twice. The known features are listed instead."""
    pd = pytest.importorskip("pandas")
    row = {n: 1.0 for n in TEN.names} | {"BMI": 1.0}
    told = "unknown feature 'BMI'; known features: age, sex, bmi, bp, s1, s2, s3, s4, s5, s6"
    for x in (row, pd.DataFrame([row]), pd.Series(row), [row]):
        with pytest.raises(InputError) as info:
            TEN.validate(x)
        assert str(info.value) == (told if not isinstance(x, list) else f"row 0: {told}")


def test_a_namedtuple_whose_column_was_renamed_is_refused_naming_the_fix():
    """itertuples renames a column that is no Python identifier ('blood glucose' becomes '_0'): its feature is
    lost, and reading the row by position is what a frame's row never is."""
    pd = pytest.importorskip("pandas")
    schema = FeatureSchema((Feature("blood glucose"), Feature("age")), classes=("x", "y"))
    frame = pd.DataFrame([{"age": 50, "blood glucose": 120.0}])
    with pytest.raises(InputError) as info:
        schema.validate(list(frame.itertuples(index=False)))
    assert str(info.value) == ("row 0: field '_1' of a namedtuple is a renamed column (itertuples renames a column "
                               "whose name is no Python identifier), so its feature is unknown; pass the data frame "
                               "itself, or its rows as df.iloc[i]")
    np.testing.assert_array_equal(schema.validate([frame.iloc[0]])[0], [[120.0, 50.0]])


def test_a_series_is_read_by_its_labels_whatever_they_are():
    """A frame with integer column labels was refused, but its row (a Series) was read by position: with columns
    reordered, the diabetes model said p = (8.6e-09, 1.0) for a row it gives (0.405, 0.595). Any labels are read as
    names now; only a Series' default labels (0, 1, …, as pd.Series(values) gives) mean schema order, as a list."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([[120.0, 50, 1]])[[1, 0, 2]]          # integer labels, 'age' first: no feature names
    fix = ("a Series is read by its labels, never by position; label it with the feature names (glucose, age, sex), "
           "or pass series.to_numpy() if its values are in schema order")
    message = f"the Series has no feature names as labels, but 1, 0, 2: {fix}"
    with pytest.raises(InputError) as info:
        SCHEMA.validate(frame.iloc[0])
    assert str(info.value) == message
    unreadable = {}
    matrix, _ = SCHEMA.to_matrix([frame.iloc[0], {"glucose": 130.0, "age": 60, "sex": 0}], unreadable=unreadable)
    assert unreadable == {0: message}
    np.testing.assert_array_equal(matrix[1], [130.0, 60.0, 0.0])
    with pytest.raises(InputError) as info:                     # labels 1, 2, 3: no default, so names
        SCHEMA.validate(pd.Series([120.0, 50, 1], index=range(1, 4)))
    assert str(info.value) == f"the Series has no feature names as labels, but 1, 2, 3: {fix}"
    with pytest.raises(InputError) as info:                     # a label that is no feature, beside two that are
        SCHEMA.validate(pd.Series([120.0, 50, 1], index=["glucose", "age", 2]))
    assert str(info.value) == f"the Series' label 2 is no feature name: {fix}"
    np.testing.assert_array_equal(SCHEMA.validate(frame.iloc[0].set_axis(["age", "glucose", "sex"]))[0],
                                  [[120.0, 50.0, 1.0]])
    positional = pd.Series([120.0, 50, 1])                      # default labels: schema order, as a list
    np.testing.assert_array_equal(SCHEMA.validate(positional)[0], [[120.0, 50.0, 1.0]])
    np.testing.assert_array_equal(SCHEMA.validate([positional, positional])[0], [[120.0, 50.0, 1.0]] * 2)


def test_a_series_labelled_by_numbers_is_told_it_has_no_feature_names_not_a_misspelling():
    """A Series labelled 1 … 10 on the diabetes schema was told "unknown feature '1'; did you mean 's1'?; a Series is
    read by its labels…": a number label misspells no feature, and the hint ran into the fix with "?;"."""
    pd = pytest.importorskip("pandas")
    with pytest.raises(InputError) as info:
        TEN.validate(pd.Series(np.arange(10.0), index=range(1, 11)))
    assert str(info.value) == ("the Series has no feature names as labels, but 1, 2, 3, 4, 5, 6, … (10 in all): a "
                               "Series is read by its labels, never by position; label it with the feature names "
                               "(age, sex, bmi, bp, s1, s2, s3, s4, s5, s6), or pass series.to_numpy() if its values "
                               "are in schema order")


def test_a_data_frame_with_number_columns_is_told_it_has_no_feature_names():
    """A frame made from an array (columns 0 … 9) was told "unknown feature '0'; known features: …", and one with
    columns 1 … 10 "unknown feature '1'; did you mean 's1'?"."""
    pd = pytest.importorskip("pandas")
    fix = ("a data frame is read by its column names, never by position; name its columns after the features (age, "
           "sex, bmi, bp, s1, s2, s3, s4, s5, s6), or pass df.to_numpy() if its columns are in schema order")
    for columns, shown in ((None, "0, 1, 2, 3, 4, 5"), (range(1, 11), "1, 2, 3, 4, 5, 6")):
        with pytest.raises(InputError) as info:
            TEN.validate(pd.DataFrame(np.zeros((2, 10)), columns=columns))
        assert str(info.value) == f"the data frame has no feature names as columns, but {shown}, … (10 in all): {fix}"


@pytest.mark.parametrize("columns, message", [
    ([*TEN.names[:2], 3, *TEN.names[3:]], "the data frame's column 3 is no feature name: {read}; it lacks the feature "
                                          "'bmi': name the column that holds it 'bmi'"),
    ([*TEN.names, 10, 11], "the data frame's columns 10, 11 are no feature names: {read}; leave them out: "
                           "df.drop(columns=[10, 11])"),
    ([*TEN.names[:8], 8, 9], "the data frame's columns 8, 9 are no feature names: {read}; it lacks the features s5, "
                             "s6: name the columns that hold them after them"),
    ([*TEN.names[:9], 9, 10], "the data frame's columns 9, 10 are no feature names: {read}; it lacks the feature "
                              "'s6': name the column that holds it 's6', and leave out the columns that hold no "
                              "feature"),
])
def test_a_data_frame_with_a_stray_number_column_is_told_what_to_do_with_it(columns, message):
    """A frame of the named features plus a column 6 was told "or leave column 6 out" where that column held a
    feature the frame lacked (following it: "missing feature 'dose'"), and of two stray columns only the first was
    named; before, all were told to pass df.to_numpy(), which gives the wrong width."""
    pd = pytest.importorskip("pandas")
    with pytest.raises(InputError) as info:
        TEN.validate(pd.DataFrame(np.zeros((2, len(columns))), columns=columns))
    assert str(info.value) == message.format(read="a data frame is read by its column names, never by position")


def test_a_data_frame_with_number_columns_is_read_where_the_features_are_named_by_those_numbers():
    """Features named "0", "1", "2" (a schema made for an array's columns) were refused for pd.DataFrame(X), told it
    "has no feature names as columns, but 0, 1, 2 … name its columns after the features (0, 1, 2)": a frame's
    columns are read by their text, as they were before the number-column message."""
    pd = pytest.importorskip("pandas")
    schema = FeatureSchema(tuple(Feature(str(i), low=-5.0, high=5.0) for i in range(3)), ("no", "yes"))
    X = np.array([[1.0, -2.0, 3.5], [0.0, 4.0, -1.0]])
    matrix, single = schema.validate(pd.DataFrame(X[:, ::-1], columns=[2, 1, 0]))
    assert not single and np.array_equal(matrix, X)


def test_a_mapping_keyed_by_numbers_is_told_its_keys_are_no_feature_names():
    """A dict keyed 1 … 10 was told "unknown feature '1'; did you mean 's1'?", as the Series was."""
    with pytest.raises(InputError) as info:
        TEN.validate({i + 1: 0.0 for i in range(10)})
    assert str(info.value) == ("key 1 is no feature name: a mapping's keys are the feature names (age, sex, bmi, bp, "
                               "s1, s2, s3, s4, s5, s6); a row in schema order is a list or a 1-D array")


@pytest.mark.parametrize("x", [
    np.ma.masked_array([120, 50, 1], mask=[0, 1, 0]),                                  # integers: no NaN of their own
    np.ma.masked_array(np.array([120, 50, 1], np.float32), mask=[0, 1, 0]),
    np.ma.masked_array(np.array([120, 50, "male"], dtype=object), mask=[0, 1, 0]),
    np.ma.masked_array(["120", "50", "male"], mask=[0, 1, 0]),                          # text
    [120, np.ma.masked, 1],
    {"glucose": 120, "age": np.ma.masked, "sex": 1},                                    # read as 0 before
], ids=["int", "float32", "object", "text", "list", "mapping"])
def test_a_masked_cell_is_missing(x):
    """A masked array was read as the values under its mask: the 50 beneath a masked 'age' was decided on."""
    with pytest.raises(InputError) as info:
        SCHEMA.validate(x)
    assert str(info.value) == "feature 'age' expects an integer in [18, 90] years, got nan; replace missing or infinite values"


def test_a_masked_cell_rejects_its_row_alone():
    unreadable = {}
    batch = np.ma.masked_array([[120, 50, 1], [130, 60, 0]], mask=[[0, 0, 0], [0, 1, 0]])
    for x in (batch, list(batch)):
        matrix, single = SCHEMA.to_matrix(x, unreadable=unreadable)
        np.testing.assert_array_equal(matrix, [[120, 50, 1], [130, np.nan, 0]])
        assert SCHEMA.check_rows(matrix) == {1: "feature 'age' expects an integer in [18, 90] years, got nan; replace "
                                                "missing or infinite values"}
    np.testing.assert_array_equal(SCHEMA.validate(np.ma.masked_array([120, 50, 1]))[0], [[120, 50, 1]])


def test_an_open_range_names_its_unit_in_words():
    """An open range read "expects a number kg/m²"."""
    schema = FeatureSchema((Feature("bmi", unit="kg/m²"), Feature("visits", kind="integer", unit="per year"),
                            Feature("score")), classes=("x", "y"))
    for row, message in (
        ({"bmi": "high", "visits": 1, "score": 0}, "feature 'bmi' expects a number (kg/m²), got 'high'"),
        ({"bmi": 25, "visits": 1.5, "score": 0}, "feature 'visits' expects an integer (per year), got 1.5"),
        ({"bmi": 25, "visits": 1, "score": None}, "feature 'score' expects a number, got no value; fill it in"),
    ):
        with pytest.raises(InputError) as info:
            schema.validate(row)
        assert str(info.value) == message


def test_a_data_frame_takes_category_names_like_a_mapping():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([{"glucose": 120.0, "age": 50, "sex": "male"}, {"glucose": 130.0, "age": 60, "sex": 0}])
    np.testing.assert_array_equal(SCHEMA.to_matrix(frame)[0], [[120.0, 50.0, 1.0], [130.0, 60.0, 0.0]])
    with pytest.raises(InputError) as info:
        SCHEMA.to_matrix(pd.DataFrame([{"glucose": 120.0, "age": 50, "sex": 1}, {"glucose": "high", "age": 50, "sex": 1}]))
    assert str(info.value) == "row 1: feature 'glucose' expects a number in [40, 600] mg/dL, got 'high'"


def test_a_category_named_by_its_own_code_reads_the_same_as_text_or_number():
    schema = FeatureSchema((Feature("grade", kind="categorical", categories=("1", "2"), codes=(1, 2)),), classes=("x", "y"))
    np.testing.assert_array_equal(schema.validate([{"grade": "2"}, {"grade": 2}])[0], [[2.0], [2.0]])


@pytest.mark.parametrize("form", ["mapping", "list", "list of rows", "rows beside a category name", "frame",
                                  "frame row"])
def test_numbers_written_as_text_read_alike_through_every_form(form):
    """As in a CSV file: a text cell that reads as a number is that number, whatever holds it and whatever
    rows share its batch."""
    pd = pytest.importorskip("pandas")
    row = {"glucose": "120.5", "age": "50", "sex": "1"}
    x = {
        "mapping": row,
        "list": list(row.values()),
        "list of rows": [list(row.values())],
        "rows beside a category name": [list(row.values()), [130.0, 60, "female"]],
        "frame": pd.DataFrame([row]),
        "frame row": pd.DataFrame([row]).iloc[0],
    }[form]
    np.testing.assert_array_equal(SCHEMA.validate(x)[0][0], [120.5, 50.0, 1.0])


def test_a_decimal_or_fraction_cell_is_a_number_through_every_form():
    """A database NUMERIC column gives Decimal('120.5'): it was refused ('expects a number ..., got
    Decimal('120.5')') while the text '120.5' was read."""
    from decimal import Decimal
    from fractions import Fraction

    pd = pytest.importorskip("pandas")
    row = {"glucose": Decimal("120.5"), "age": Fraction(50), "sex": "male"}
    for x in (row, list(row.values()), [list(row.values())], np.array([list(row.values())], dtype=object),
              pd.DataFrame([row]), pd.DataFrame([row]).iloc[0]):
        np.testing.assert_array_equal(SCHEMA.validate(x)[0], [[120.5, 50.0, 1.0]])
    with pytest.raises(InputError) as info:
        SCHEMA.validate({**row, "glucose": Decimal("NaN")})
    assert str(info.value) == ("feature 'glucose' expects a number in [40, 600] mg/dL, got nan; replace missing or "
                               "infinite values")
    with pytest.raises(InputError) as info:
        SCHEMA.validate({**row, "glucose": Decimal("sNaN")})
    assert str(info.value) == "feature 'glucose' expects a number in [40, 600] mg/dL, got Decimal('sNaN')"


def test_a_tensor_that_requires_grad_is_read_as_its_values():
    """NumPy cannot read such a tensor: torch's own RuntimeError escaped, which is no EdgeInferError."""
    torch = pytest.importorskip("torch")
    x = torch.tensor([[120.5, 50.0, 1.0]], requires_grad=True)
    for form in (x, x[0], list(x), {"glucose": x[0, 0], "age": x[0, 1], "sex": x[0, 2]}):
        np.testing.assert_array_equal(SCHEMA.validate(form)[0], [[120.5, 50.0, 1.0]])


def test_a_bfloat16_tensor_is_read_as_its_values():
    """NumPy has no bfloat16: "could not read the input as numbers (Got unsupported ScalarType BFloat16)". float32
    holds each bfloat16 value exactly, so the tensor is read as those values."""
    torch = pytest.importorskip("torch")
    x = torch.tensor([[120.5, 50.0, 1.0]], dtype=torch.bfloat16)
    for form in (x, x[0], list(x), {"glucose": x[0, 0], "age": x[0, 1], "sex": x[0, 2]}, x.requires_grad_()):
        np.testing.assert_array_equal(SCHEMA.validate(form)[0], [[120.5, 50.0, 1.0]])


def test_byte_strings_read_as_text():
    """Fixed-width byte strings (NumPy 'S', HDF5) read as the text they hold."""
    np.testing.assert_array_equal(SCHEMA.validate(np.array([[b"120.5", b"50", b"male"]]))[0], [[120.5, 50.0, 1.0]])
    with pytest.raises(InputError) as info:
        SCHEMA.validate([b"\xff", 50, 1])
    assert str(info.value) == ("feature 'glucose' expects a number in [40, 600] mg/dL, got b'\\xff'; give text or "
                               "numbers")


def test_an_object_array_reads_as_its_cells():
    """A mixed table's .values: numbers at once, a category name or numeric text cell by cell."""
    rows = [[120.5, 50, 1], [130.0, 60, "female"], ["140", 70, 0]]
    np.testing.assert_array_equal(SCHEMA.validate(np.array(rows[:1], dtype=object))[0], [[120.5, 50.0, 1.0]])
    np.testing.assert_array_equal(SCHEMA.validate(np.array(rows, dtype=object))[0],
                                  [[120.5, 50.0, 1.0], [130.0, 60.0, 0.0], [140.0, 70.0, 0.0]])


@pytest.mark.parametrize(
    "cell, message",
    [
        ("", "feature 'glucose' expects a number in [40, 600] mg/dL, got an empty value; fill it in"),
        (None, "feature 'glucose' expects a number in [40, 600] mg/dL, got no value; fill it in"),
        ("1_20", "feature 'glucose' expects a number in [40, 600] mg/dL, got '1_20'"),
        (10**400, "feature 'glucose' expects a number in [40, 600] mg/dL, got an integer of 401 digits"),
        pytest.param(10**5000, "feature 'glucose' expects a number in [40, 600] mg/dL, got an integer of 5,001 "
                     "digits", id="5001-digits"),      # past the 4,300 digits str() reads: its repr would fail too
        pytest.param(1 - 10**5000, "feature 'glucose' expects a number in [40, 600] mg/dL, got an integer of 5,000 "
                     "digits", id="minus-5000-digits"),
        (600.0000001, "feature 'glucose' expects a number in [40, 600] mg/dL, got 600.0000001"),
    ],
)
@pytest.mark.parametrize("form", ["mapping", "list", "list of rows"])
def test_a_missing_or_unreadable_cell_is_named_alike_through_every_form(form, cell, message):
    x = {"mapping": {"glucose": cell, "age": 50, "sex": 1}, "list": [cell, 50, 1], "list of rows": [[cell, 50, 1]]}[form]
    with pytest.raises(InputError) as info:
        SCHEMA.validate(x)
    assert str(info.value) == ("row 0: " if form == "list of rows" else "") + message


def test_an_integer_past_python_text_limit_rejects_its_row_alone():
    """An integer of over 4,300 digits made str() raise a raw ValueError in the overflow message, which took the
    whole batch down; its row is now rejected alone, as a 401-digit one is."""
    good = {"glucose": 120, "age": 50, "sex": 1}
    unreadable = {}
    matrix, single = SCHEMA.to_matrix([good, {**good, "age": 10**5000}, good], unreadable=unreadable)
    assert unreadable == {1: "feature 'age' expects an integer in [18, 90] years, got an integer of 5,001 digits"}
    np.testing.assert_array_equal(matrix[[0, 2]], [[120, 50, 1], [120, 50, 1]])


def test_a_bound_sent_as_float32_is_the_bound():
    """600.3 has no float32: sent as float32 it arrives as 600.29998779..., a bound's nearest float32, which means
    the bound (as the server reads it), not a value to refuse or to move."""
    schema = FeatureSchema((Feature("glucose", low=40.1, high=600.3), Feature("age", low=18, high=90)), classes=("x", "y"))
    expected = [[600.3, 90.0], [40.1, 18.0]]
    sent = np.array(expected, dtype=np.float32)
    assert float(sent[0, 0]) != 600.3
    np.testing.assert_array_equal(schema.validate(sent)[0], expected)
    np.testing.assert_array_equal(schema.validate({"glucose": sent[0, 0], "age": sent[0, 1]})[0], expected[:1])
    np.testing.assert_array_equal(schema.validate(list(sent[0]))[0], expected[:1])          # float32 scalars
    np.testing.assert_array_equal(schema.validate([sent[0, 0], 90])[0], expected[:1])       # ... beside an int
    np.testing.assert_array_equal(schema.validate(list(sent))[0], expected)                 # float32 rows
    typed = [600.0, 90.0]                                  # ... whatever their batch-mates: NumPy widens them together
    np.testing.assert_array_equal(schema.validate([list(sent[0]), typed])[0], [expected[0], typed])
    np.testing.assert_array_equal(schema.validate((sent[1], typed))[0], [expected[1], typed])
    pd = pytest.importorskip("pandas")
    np.testing.assert_array_equal(schema.validate(pd.DataFrame(sent, columns=["glucose", "age"]))[0], expected)
    mixed = pd.DataFrame({"glucose": sent[:, 0], "age": [90, 18]})          # a float32 column beside an int64 one
    np.testing.assert_array_equal(schema.validate(mixed)[0], expected)
    frame = pd.DataFrame(sent, columns=["glucose", "age"])
    np.testing.assert_array_equal(schema.validate(frame.iloc[0])[0], expected[:1])       # a float32 frame's row
    # object arrays and frames, and a mixed frame's rows, hand float32 cells out as Python floats (600.29998779...)
    nullable = frame.assign(age=pd.array([90, 18], dtype="Int64"))
    assert type(nullable.to_numpy()[0, 0]) is float and nullable.iloc[0].dtype == "Float64"
    for x in (sent.astype(object), frame.astype(object), nullable.to_numpy(), [nullable.iloc[0], nullable.iloc[1]],
              [frame.iloc[0], frame.astype(object).iloc[1]]):
        np.testing.assert_array_equal(schema.validate(x)[0], expected)
    np.testing.assert_array_equal(schema.validate(nullable.iloc[1])[0], expected[1:])       # (40.099998... < 40.1)
    with pytest.raises(InputError):                       # ... and one past it is still out
        schema.validate(np.nextafter(sent[:1], np.float32(1e9)).astype(object))
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(schema.validate(torch.tensor(expected, dtype=torch.float32))[0], expected)
    tensors = {"glucose": torch.tensor(sent[0, 0]), "age": torch.tensor(90)}             # 0-d tensors in a mapping
    np.testing.assert_array_equal(schema.validate(tensors)[0], expected[:1])
    with pytest.raises(InputError):                       # a float32 past its bound's nearest float32 is still out
        schema.validate(np.nextafter(sent[:1], np.float32(1e9)))


def test_an_infinity_in_float16_is_refused_not_taken_as_a_bound_beyond_float16():
    """A bound beyond float16 (1e30) is inf there, so a float16 inf equalled the bound's nearest float16 and became
    1e30: decided (class 'yes', explained with x = 1e30) where a float64 inf is refused. Refused alike now."""
    schema = FeatureSchema((Feature("x", low=-1e30, high=1e30), Feature("y", low=0, high=10)), classes=("no", "yes"))
    message = "feature 'x' expects a number in [-1e+30, 1e+30], got {}; replace missing or infinite values"
    for sign, shown in ((1, "inf"), (-1, "-inf")):
        row = np.array([sign * np.inf, 3.0], dtype=np.float16)
        forms = [row, row[None], row.astype(object), list(row), {"x": row[0], "y": 3.0}, np.array([sign * np.inf, 3.0])]
        pd = pytest.importorskip("pandas")
        frame = pd.DataFrame({"x": row[:1], "y": [3.0]})             # a float16 column beside a float64 one
        forms += [frame, frame.astype(np.float16).iloc[0]]
        torch = pytest.importorskip("torch")
        forms += [torch.tensor(row.astype(np.float32)).to(torch.float16), {"x": torch.tensor(row[0]), "y": 3.0}]
        for x in forms:
            with warnings.catch_warnings():
                warnings.simplefilter("error")          # no overflow warning from casting the bound either
                with pytest.raises(InputError) as info:
                    schema.validate(x)
            assert str(info.value).removeprefix("row 0: ") == message.format(shown), type(x)
    bounds = np.array([[1e30, 10.0], [-1e30, 0.0]])
    np.testing.assert_array_equal(schema.validate(bounds.astype(np.float32))[0], bounds)   # float32 holds 1e30


def test_a_data_frame_text_cell_with_an_underscore_is_refused_as_in_every_form():
    """float('4_8') is 48: a text column went through float() and read what a CSV refuses."""
    pd = pytest.importorskip("pandas")
    schema = FeatureSchema((Feature("age", kind="integer", low=18, high=90, unit="years"), Feature("x")), ("a", "b"))
    frame = pd.DataFrame({"age": ["4_8", "52"], "x": [1.0, 2.0]}, dtype=object)
    unreadable: dict = {}
    matrix, _ = schema.to_matrix(frame, unreadable=unreadable)
    assert unreadable == {0: "feature 'age' expects an integer in [18, 90] years, got '4_8'"}
    assert matrix[1].tolist() == [52.0, 2.0]


def test_only_numbers_that_are_inf_in_float32_are_beyond_the_model():
    schema = FeatureSchema((Feature("a"),), ("x", "y"))
    assert schema.check_rows(np.array([[3.4028235e38], [-3.4028235e38]])) == {}     # float32's own maximum
    assert schema.check_rows(np.array([[3.5e38]])) == {0: (
        "feature 'a' expects a number, got 3.5e+38, beyond the float32 numbers the model reads (at most "
        "3.4028235e+38 in size)")}


def test_a_refusal_never_shows_a_range_that_holds_the_refused_value():
    """Bounds in 6 digits rounded -3.012239525 down to -3.01224: -3.0122396 was refused 'in [-3.01224, ...]'."""
    schema = FeatureSchema((Feature("acc", low=-3.012239525, high=21.965355954887, unit="m/s²"),), ("a", "b"))
    assert schema.check_rows(np.array([[-3.0122396], [21.96536]])) == {
        0: "feature 'acc' expects a number in [-3.012239525, 21.965355954887] m/s², got -3.0122396",
        1: "feature 'acc' expects a number in [-3.012239525, 21.965355954887] m/s², got 21.96536"}


def test_a_data_frame_naming_a_column_twice_is_refused():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([{"glucose": 120.0, "age": 50, "sex": 1}])
    frame.insert(0, "glucose", 300.0, allow_duplicates=True)
    with pytest.raises(InputError) as info:
        SCHEMA.to_matrix(frame)
    assert str(info.value) == "column 'glucose' appears twice; give each feature once"


def test_a_list_of_rows_with_an_unreadable_cell_sets_aside_that_row_alone():
    unreadable: dict[int, str] = {}
    matrix, single = SCHEMA.to_matrix([[120.0, 50, 1], [130.0, 50, "other"], [140.0, 60], [150.0, 70, 0]],
                                      unreadable=unreadable)
    assert not single
    assert unreadable == {1: "feature 'sex' expects one of 'female' (0), 'male' (1), got 'other'",
                          2: "expected 3 values in schema order (glucose, age, sex), got 2"}
    np.testing.assert_array_equal(matrix[[0, 3]], [[120.0, 50.0, 1.0], [150.0, 70.0, 0.0]])
    with pytest.raises(InputError) as info:             # without somewhere to put the reason: the row is named
        SCHEMA.to_matrix([[120.0, 50, 1], [130.0, 50, "other"]])
    assert str(info.value) == "row 1: feature 'sex' expects one of 'female' (0), 'male' (1), got 'other'"


def test_batch_checks_report_every_bad_row_and_keep_the_rest():
    batch = np.array([[120, 50, 1], [20, 50, 1], [120, 50, 0], [120, 17, 0]], dtype=float)
    assert SCHEMA.check_rows(batch) == {
        1: "feature 'glucose' expects a number in [40, 600] mg/dL, got 20",
        3: "feature 'age' expects an integer in [18, 90] years, got 17",
    }


def test_schema_round_trips_through_dict_and_files(tmp_path):
    assert FeatureSchema.from_dict(SCHEMA.to_dict()) == SCHEMA
    stepped = FeatureSchema(features=(Feature("rhythm", low=0, high=5, unit="Hz", step=0.5),
                                      Feature("dose", kind="integer", low=0, high=100, step=5),
                                      Feature("visits", kind="integer"), Feature("level")), classes=("a", "b"))
    data = stepped.to_dict()
    assert [f.get("step") for f in data["features"]] == [0.5, 5.0, None, None]    # written only where there is one
    assert FeatureSchema.from_dict(data) == stepped
    assert [f.grid for f in stepped.features] == [0.5, 5.0, 1.0, 0.0]          # the spacing the search keeps
    toml = tmp_path / "schema.toml"
    toml.write_text(
        'classes = ["low risk", "high risk"]\nfavourable = "low risk"\n'
        '[[features]]\nname = "glucose"\nrange = [40, 600]\nunit = "mg/dL"\n'
        '[[features]]\nname = "age"\nkind = "integer"\nrange = [18, 90]\nunit = "years"\nmutable = false\nprotected = true\n'
        '[[features]]\nname = "sex"\nkind = "categorical"\ncategories = ["female", "male"]\nprotected = true\n'
    )
    assert FeatureSchema.load(toml) == SCHEMA
    json_file = tmp_path / "schema.json"
    json_file.write_text(__import__("json").dumps(SCHEMA.to_dict()))
    assert FeatureSchema.load(json_file) == SCHEMA
    json_file.write_text("\ufeff" + json_file.read_text(), encoding="utf-8")     # saved by Notepad or Excel
    assert FeatureSchema.load(json_file) == SCHEMA
    data = SCHEMA.to_dict()        # a caller's NumPy values are numbers and lists too
    data["classes"] = np.array(data["classes"])
    data["features"][0]["range"] = [np.int64(40), np.float64(600)]
    assert FeatureSchema.from_dict(data) == SCHEMA


def test_the_readmes_schema_loads_with_the_defaults_it_states(tmp_path):
    """The README's schema to start from: TOML has no null, so a bound is left open with inf (the range error said
    "or null for no bound", which a TOML file cannot write); what is left out takes the defaults the README lists."""
    path = tmp_path / "schema.toml"
    path.write_text('classes = ["reject", "approve"]\nfavourable = "approve"\n'
                    '[[features]]\nname = "income"\nrange = [0, inf]\nunit = "USD"\n'
                    '[[features]]\nname = "age"\nkind = "integer"\nrange = [18, 100]\nmutable = false\nprotected = true\n'
                    '[[features]]\nname = "housing"\nkind = "categorical"\ncategories = ["rent", "own", "other"]\n'
                    '[[features]]\nname = "debt"\n')
    schema = FeatureSchema.load(path)
    assert (schema.name, schema.classes, schema.favourable) == ("model", ("reject", "approve"), "approve")
    assert schema.features == (
        Feature("income", low=0, high=math.inf, unit="USD"),
        Feature("age", kind="integer", low=18, high=100, mutable=False, protected=True),
        Feature("housing", kind="categorical", categories=("rent", "own", "other"), codes=(0, 1, 2)),
        Feature("debt", low=-math.inf, high=math.inf))
    debt = schema.features[3]
    assert (debt.kind, debt.mutable, debt.protected, debt.monotone, debt.lay, debt.clinical, debt.unit, debt.step) == (
        "continuous", True, False, "any", "debt", "debt", "", 0.0)
    assert schema.feature("housing").code_of("own") == schema.feature("housing").code_of("1") == 1.0
    path.write_text('classes = ["a", "b"]\n[[features]]\nname = "x"\nrange = [0, "inf"]\n')
    with pytest.raises(SchemaError) as info:
        FeatureSchema.load(path)
    assert str(info.value) == ("feature 'x': range must be [low, high], two numbers (for no bound: -inf or inf in TOML, "
                               "null in JSON; or leave range out), got [0, 'inf']")


def test_actionable_defaults_to_mutable_and_unprotected_and_round_trips(tmp_path):
    """A feature a counterfactual may vary (mutable) need not be one a person can act on (a biopsy image's
    measurement): `actionable` says so, through the dict, TOML and JSON forms; left out, it is mutable and not
    protected, so a schema written before the flag reads as before."""
    # glucose; age immutable; sex protected
    assert [f.is_actionable for f in SCHEMA.features] == [True, False, False]
    image = Feature("concave points", low=0, high=1, actionable=False)
    assert (image.mutable, image.is_actionable) == (True, False)
    schema = FeatureSchema(features=(*SCHEMA.features, image), classes=SCHEMA.classes, favourable=SCHEMA.favourable)
    data = schema.to_dict()
    # written only where given: the default follows mutable and protected
    assert [f.get("actionable") for f in data["features"]] == [None, None, None, False]
    assert FeatureSchema.from_dict(data) == schema
    toml = tmp_path / "schema.toml"
    toml.write_text('classes = ["a", "b"]\n[[features]]\nname = "concave points"\nrange = [0, 1]\nactionable = false\n'
                    '[[features]]\nname = "dose"\n')
    loaded = FeatureSchema.load(toml)
    assert [(f.mutable, f.is_actionable) for f in loaded.features] == [(True, False), (True, True)]
    json_file = tmp_path / "schema.json"
    json_file.write_text(__import__("json").dumps(data))
    assert FeatureSchema.load(json_file) == schema
    # the default stays a default: a feature made immutable or protected later is no longer actionable
    glucose = SCHEMA.features[0]
    assert not dataclasses.replace(glucose, mutable=False).is_actionable
    assert not dataclasses.replace(glucose, protected=True).is_actionable


@pytest.mark.parametrize(
    "data, message",
    [
        ({"features": [{"name": "a", "kind": "fuzzy"}], "classes": ["x", "y"]},
         "feature 'a': kind must be one of continuous, integer, categorical, got 'fuzzy'"),
        ({"features": [{"name": "a", "range": [5, 1]}], "classes": ["x", "y"]},
         "feature 'a': range [5.0, 1.0] is empty; give [low, high] with low <= high"),
        ({"features": [{"name": "a"}, {"name": "a"}], "classes": ["x", "y"]},
         "feature names must be unique; repeated: a"),
        ({"features": [{"name": "a"}], "classes": ["x", "y"], "favourable": "z"},
         "favourable outcome 'z' is not a class; classes are ['x', 'y']"),
        ({"features": [{"name": "a", "monotone": "up"}], "classes": ["x", "y"]},
         "feature 'a': monotone must be one of any, increase, decrease, got 'up'"),
        ({"features": [{"name": "a", "colour": 1}], "classes": ["x", "y"]},
         "feature 'a': unknown key 'colour'; known keys: actionable, categories, clinical, codes, kind, lay, monotone, mutable, name, protected, range, step, unit"),
        # review JF: a near miss was left to be found in the list
        ({"features": [{"name": "a", "catagories": ["u", "v"]}], "classes": ["x", "y"]},
         "feature 'a': unknown key 'catagories'; did you mean 'categories'? known keys: actionable, categories, "
         "clinical, codes, kind, lay, monotone, mutable, name, protected, range, step, unit"),
        # never the key a negation names: 'mutable = true' as told would reverse it
        ({"features": [{"name": "a", "immutable": True}], "classes": ["x", "y"]},
         "feature 'a': unknown key 'immutable'; known keys: actionable, categories, clinical, codes, kind, lay, "
         "monotone, mutable, name, protected, range, step, unit"),
        ({"features": [{"name": "a", "ccategories": ["u", "v"]}], "classes": ["x", "y"]},
         "feature 'a': unknown key 'ccategories'; did you mean 'categories'? known keys: actionable, categories, "
         "clinical, codes, kind, lay, monotone, mutable, name, protected, range, step, unit"),
        ({"features": [{"name": "a"}], "classes": ["x", "y"], "favorable": "y"},
         "unknown schema key favorable; did you mean 'favourable'? known keys: classes, description, favourable, "
         "features, name"),
        ({"features": [{"name": "age", "mutable": False, "actionable": True}], "classes": ["x", "y"]},
         "feature 'age': actionable = true, but the feature is immutable (mutable = false), so no counterfactual "
         "changes it; set mutable = true, or actionable = false (the default for an immutable feature)"),
        ({"features": [{"name": "sex", "protected": True, "actionable": True}], "classes": ["x", "y"]},
         "feature 'sex': actionable = true, but the feature is protected, and no one is told to change a protected "
         "attribute; set actionable = false (the default for a protected feature)"),
        ({"features": [{"name": "a", "actionable": "no"}], "classes": ["x", "y"]},
         "feature 'a': actionable must be true or false, got 'no'"),
        ({"features": [{"name": "a", "range": ["low", 5]}], "classes": ["x", "y"]},
         "feature 'a': range must be [low, high], two numbers (for no bound: -inf or inf in TOML, null in JSON; or "
         "leave range out), got ['low', 5]"),
        ({"features": [{"name": "c", "kind": "categorical", "categories": ["p", "q"], "codes": ["a", "b"]}],
          "classes": ["x", "y"]},
         "feature 'c': codes must be numbers (the values the model reads), got ['a', 'b']"),
        ({"features": [{"name": "c", "kind": "categorical", "categories": "pq"}], "classes": ["x", "y"]},
         "feature 'c': categories must be a list, got 'pq'"),
        ({"features": [{"name": "a"}], "classes": ["x", "x"]}, "class names must be unique; repeated: x"),
        ({"features": [{"name": "c", "kind": "categorical", "categories": ["p", "p"]}], "classes": ["x", "y"]},
         "feature 'c': categories must be unique; repeated: p"),
        ({"features": [{"name": "c", "kind": "categorical", "categories": ["p", "q"], "codes": [0, 0]}],
          "classes": ["x", "y"]},
         "feature 'c': codes must be unique; repeated: 0"),
        ({"features": [{"name": "c", "kind": "categorical", "categories": ["1", "2"]}], "classes": ["x", "y"]},
         "feature 'c': category '1' reads as the number 1, but its code is 0, so a value 1 in a CSV file or an array "
         "would mean another category; name the categories so that they do not read as numbers (e.g. 'group 1'), "
         "or make each such name its own code"),
        ({"features": 3, "classes": ["x", "y"]}, "schema key 'features' must be a list, got 3"),
        ({"features": [{"name": "a", "step": -0.5}], "classes": ["x", "y"]},
         "feature 'a': step must be a positive number (the spacing of the feature's values, e.g. 0.5), or 0 for "
         "none; got -0.5"),
        ({"features": [{"name": "a", "step": "0.5"}], "classes": ["x", "y"]},
         "feature 'a': step must be a positive number (the spacing of the feature's values, e.g. 0.5), or 0 for "
         "none; got '0.5'"),
        ({"features": [{"name": "n", "kind": "integer", "step": 2.5}], "classes": ["x", "y"]},
         "feature 'n': an integer feature's step must be a whole number, got 2.5"),
        ({"features": [{"name": "c", "kind": "categorical", "categories": ["p", "q"], "step": 1}], "classes": ["x", "y"]},
         "feature 'c': step is only for continuous and integer features; a categorical feature takes its codes"),
        ({"features": [{"name": "f", "range": [1.1, 1.4], "step": 0.5}], "classes": ["x", "y"]},
         "feature 'f': range [1.1, 1.4] holds no multiple of its step 0.5; widen the range or change the step"),
        ({"features": [{"name": "a"}], "classes": "xy"}, "schema key 'classes' must be a list, got 'xy'"),
    ],
)
def test_bad_schema_messages(data, message):
    with pytest.raises(SchemaError) as info:
        FeatureSchema.from_dict(data)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("unit", ["kg/m²"], "feature 'a': unit must be text, got ['kg/m²']; give one string (e.g. unit = \"kg/m²\"), "
                            "or leave unit out"),
        ("lay", 5, "feature 'a': lay must be text, got 5; give one string (e.g. lay = \"body mass index\"), or leave "
                   "lay out"),
        ("clinical", {"en": "BMI"}, "feature 'a': clinical must be text, got {'en': 'BMI'}; give one string (e.g. "
                                    "clinical = \"BMI\"), or leave clinical out"),
    ],
)
def test_a_feature_text_that_is_no_text_is_refused_where_the_schema_is_read(key, value, message):
    """A list for `unit` (or a number for `lay`) was accepted; export then trained, quantized and gated the model
    and failed at its end on "unhashable type: 'list'"."""
    with pytest.raises(SchemaError) as info:
        FeatureSchema.from_dict({"features": [{"name": "a", key: value}], "classes": ["x", "y"]})
    assert str(info.value) == message
    with pytest.raises(SchemaError) as info:
        Feature("a", **{key: value})
    assert str(info.value) == message


def test_a_feature_text_that_is_null_is_left_out():
    """Bundles exported before feature texts were checked wrote "unit": null into their manifest; the check refused
    them ("feature 's4': unit must be text, got None"). Null means left out: no unit, the name as lay and clinical."""
    schema = FeatureSchema.from_dict({"features": [{"name": "s4", "unit": None, "lay": None, "clinical": None},
                                                   {"name": "bmi", "unit": "kg/m²", "lay": None}], "classes": ["x", "y"]})
    assert [(f.unit, f.lay, f.clinical) for f in schema.features] == [("", "s4", "s4"), ("kg/m²", "bmi", "bmi")]
    assert Feature("s4", unit=None, lay=None, clinical=None) == Feature("s4")
    assert schema.features[0].describe_expected() == "a number"


def test_a_category_that_is_no_text_is_refused():
    with pytest.raises(SchemaError) as info:
        Feature("c", kind="categorical", categories=("p", ["q"]))
    assert str(info.value) == ("feature 'c': categories must be names (text), got ['p', ['q']]; give each as a "
                               "string (e.g. 'male'), or build the schema with FeatureSchema.from_dict")


def test_a_schema_file_of_another_suffix_is_refused_for_its_suffix_alone(tmp_path):
    """--schema calib.csv said 'schema file calib.csv is not valid CSV: schema file calib.csv must end in .toml or
    .json': the suffix refusal was raised inside the parse's try and wrapped as a parse error."""
    path = tmp_path / "calib.csv"
    path.write_text("glucose,age\n100,40\n")
    with pytest.raises(SchemaError) as caught:
        FeatureSchema.load(path)
    assert str(caught.value) == f"schema file {path} must end in .toml or .json"


def test_a_schema_file_that_is_not_utf8_is_refused_naming_the_byte(tmp_path):
    """Review Q1: a unit "µmol/L" saved as Latin-1 escaped as Python's UnicodeDecodeError (a 36-line traceback from
    `edgeinfer export --schema`)."""
    path = tmp_path / "lat.toml"
    path.write_bytes('classes = ["a", "b"]\n[[features]]\nname = "x"\nunit = "µmol/L"\n'.encode("latin-1"))
    with pytest.raises(SchemaError) as caught:
        FeatureSchema.load(path)
    assert str(caught.value) == f"schema file {path} is not UTF-8 text (byte 53); save it as UTF-8"


def test_numeric_classes_and_favourable_are_named_alike(tmp_path):
    """classes = [0, 1, 2] become '0', '1', '2'; favourable = 0 is read the same way, not refused as no class."""
    path = tmp_path / "s.toml"
    body = '\n[[features]]\nname = "age"\nkind = "integer"\nrange = [18, 90]\n'
    path.write_text('classes = [0, 1, 2]\nfavourable = 0\n' + body)
    schema = FeatureSchema.load(path)
    assert (schema.classes, schema.favourable) == (("0", "1", "2"), "0")
    path.write_text('classes = [0, 1, 2]\nfavourable = 3\n' + body)
    with pytest.raises(SchemaError) as caught:
        FeatureSchema.load(path)
    assert str(caught.value) == "favourable outcome '3' is not a class; classes are ['0', '1', '2']"


def test_a_bool_is_no_number_through_every_form():
    """True is refused as a CSV cell 'True' is: a frame's bool column or an object array holding one used to be read
    as code 1, while a mapping refused it."""
    pd = pytest.importorskip("pandas")
    message = "row 0: feature 'sex' expects one of 'female' (0), 'male' (1), got True"
    frame = pd.DataFrame({"glucose": [120.0], "age": [50], "sex": [True]})
    for x in (frame, np.array([[120.0, 50, True]], dtype=object)):
        with pytest.raises(InputError) as err:
            SCHEMA.validate(x)
        assert str(err.value) == message
    with pytest.raises(InputError) as err:
        SCHEMA.validate({"glucose": 120.0, "age": 50, "sex": True})
    assert str(err.value) == message.removeprefix("row 0: ")
    unreadable = {}
    SCHEMA.to_matrix(pd.concat([frame.assign(sex=False), frame]).astype({"sex": bool}), unreadable=unreadable)
    assert unreadable == {0: message.replace("True", "False").removeprefix("row 0: "), 1: message.removeprefix("row 0: ")}


@pytest.mark.parametrize("form", ["list", "tuple", "np.bool_ in a list", "batch of lists", "bool array row in a list"])
def test_a_bool_in_a_plain_list_is_no_number(form):
    """NumPy reads [True, 50.0, 1.0] as [1.0, 50.0, 1.0]: a list or tuple holding a bool is read cell by cell, as an
    object array is, so True is refused, not decided as 1.0."""
    x = {
        "list": [True, 50.0, 1.0],
        "tuple": (True, 50.0, 1.0),
        "np.bool_ in a list": [np.bool_(True), 50.0, 1.0],
        "batch of lists": [[120.0, 50.0, 1.0], [True, 50.0, 1.0]],
        "bool array row in a list": [[120.0, 50.0, 1.0], np.array([True, True, True])],
    }[form]
    message = "feature 'glucose' expects a number in [40, 600] mg/dL, got True"
    with pytest.raises(InputError) as err:
        SCHEMA.validate(x)
    assert str(err.value) == (message if form in ("list", "tuple", "np.bool_ in a list") else f"row 1: {message}")
    unreadable = {}
    matrix, _ = SCHEMA.to_matrix([[120.0, 50, 1], x if np.ndim(x) == 1 else x[1]], unreadable=unreadable)
    assert unreadable == {1: message} and matrix[0].tolist() == [120.0, 50.0, 1.0] and np.isnan(matrix[1]).all()


def test_a_name_with_a_control_or_bidi_character_is_refused_naming_it():
    """A feature named "glu\u202ecose" (right-to-left override) made the PDF read its "+0.032" as "230.0+", and a
    newline in a class name forged lines in `explain --format text`; emoji (with their joiners) stay allowed."""
    from edgeinfer.errors import SchemaError

    cases = [
        (lambda: Feature("glu\u202ecose"), r"feature name 'glu\u202ecose' holds the control character U+202E"),
        (lambda: Feature("a", unit="mg\n"), "feature 'a': unit 'mg\\n' holds the control character U+000A"),
        (lambda: Feature("s", kind="categorical", categories=("a", "b\t")),
         "feature 's': category 'b\\t' holds the control character U+0009"),
        (lambda: FeatureSchema(features=(Feature("a"),), classes=("yes\n## H", "no")),
         "class name 'yes\\n## H' holds the control character U+000A"),
        (lambda: FeatureSchema(features=(Feature("a"),), classes=("y", "n"), name="m\u2067"),
         r"model name 'm\u2067' holds the control character U+2067"),
    ]
    for make, start in cases:
        with pytest.raises(SchemaError) as info:
            make()
        assert str(info.value) == f"{start}, which would break or reorder the texts that show it; remove it"
    assert Feature("mood 👨\u200d👩\u200d👧").name == "mood 👨\u200d👩\u200d👧"
