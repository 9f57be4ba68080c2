"""The rolling monitor says why it compared no groups, so no alert does not read as fair."""

from edgeinfer.explain.monitor import RollingFairness


def test_a_group_under_the_minimum_is_named_with_its_count():
    """19 male decisions against 78 female: no difference and no alert, and nothing said why."""
    m = RollingFairness(window=500, sensitive_feature="sex")
    for i in range(78):
        m.observe(f"f{i}", "female", 0)
    snap = m.snapshot()
    assert snap.demographic_parity_not_compared == "only female is in the window (78 decisions)"
    for i in range(19):
        m.observe(f"m{i}", "male", int(i > 0))
    snap = m.snapshot()
    assert (snap.demographic_parity_difference, snap.alerts, snap.min_group_size) == (None, (), 30)
    assert snap.demographic_parity_not_compared == "male has 19 decisions (< 30)"


def test_every_short_group_is_named_in_the_stream_s_unit():
    m = RollingFairness(window=500, sensitive_feature="sex", unit="window")
    assert m.snapshot().demographic_parity_not_compared == "no windows observed"
    m.observe(0, "female", 0)
    for i in range(1, 13):
        m.observe(i, "male", 1)
    m.observe(13, "other", 1)
    assert m.snapshot().demographic_parity_not_compared == (
        "female has 1 window, male has 12 windows, other has 1 window (< 30)")


def test_a_window_too_short_for_two_groups_can_never_compare():
    """A window of 50 holds two groups of 30 never: no alert could ever fire, whatever the decisions."""
    m = RollingFairness(window=50, sensitive_feature="sex", unit="window")
    assert m.never_compares() == "the window holds at most 50 windows, too few for two groups of 30"
    for i in range(100):
        m.observe(i, "male" if i % 2 else "female", i % 2)
    snap = m.snapshot()
    assert [(g.group, g.count, g.selection_rate) for g in snap.by_group] == [("female", 25, 0.0), ("male", 25, 1.0)]
    assert snap.demographic_parity_difference is None and snap.alerts == ()
    assert snap.demographic_parity_not_compared == "the window holds at most 50 windows, too few for two groups of 30"
    assert RollingFairness(window=60, sensitive_feature="sex").never_compares() is None


def test_compared_groups_have_no_reason():
    m = RollingFairness(window=500, sensitive_feature="sex")
    for i in range(30):
        m.observe(f"a{i}", "A", 1)
        m.observe(f"b{i}", "B", 0)
    snap = m.snapshot()
    assert (snap.demographic_parity_difference, snap.demographic_parity_not_compared) == (1.0, None)


def test_numeric_groups_are_listed_by_value():
    """The snapshot sorted its groups by their text: age groups 9, 10 and 65.5 came out as 10, 65.5, 9."""
    m = RollingFairness(window=100, sensitive_feature="age")
    for i, group in enumerate([65.5, 9, 10, "unknown", 9]):
        m.observe(i, group, i % 2)
    assert [g.group for g in m.snapshot().by_group] == [9, 10, 65.5, "unknown"]


def test_an_alert_s_rates_read_as_far_apart_as_its_difference_in_the_stream_s_unit():
    """7/30 against 1/31 is 0.201 apart: the rates read 0.23 and 0.03 (0.20 apart, not above 0.2) over the last
    61 'decisions' of a monitor counting windows."""
    m = RollingFairness(window=500, sensitive_feature="sex", unit="window")
    for i in range(30):
        m.observe(f"f{i}", "female", int(i < 7))
    for i in range(31):
        m.observe(f"m{i}", "male", int(i < 1))
    (alert,) = m.snapshot().alerts
    assert alert.message == ("demographic parity difference on sex is 0.201, above 0.2: selection rate 0.233 for "
                             "female vs 0.032 for male over the last 61 windows")


def test_the_mean_probability_is_exact_however_long_the_stream_runs():
    """A running float sum, added on arrival and taken off on eviction, drifted: after 100,000 decisions a window
    of three zeros read a mean probability of -6.7e-15. The sums are exact now, in whole units of 2**-64 (every bit
    of a probability from 2**-12 up), and the mean is rounded once."""
    import random
    from fractions import Fraction

    random.seed(0)
    monitor = RollingFairness(window=3, sensitive_feature="sex")
    for i in range(100_000):
        monitor.observe(i, "a", 1, random.random() if i < 99_990 else 0.0)
    assert monitor.snapshot().by_group[0].mean_probability == 0.0
    for i, p in enumerate((0.1, 0.2, 0.4), start=100_000):
        monitor.observe(i, "a", 1, p)
    exact = (Fraction(0.1) + Fraction(0.2) + Fraction(0.4)) / 3
    assert monitor.snapshot().by_group[0].mean_probability == float(exact) == 0.23333333333333334


def test_a_difference_that_leaves_a_small_group_out_names_it():
    """Review: a and b selected at 1.000 and c, 29 decisions, at 0.000 read "demographic parity difference 0.00" with
    nothing said of c."""
    m = RollingFairness(window=500, sensitive_feature="grp")
    for i in range(30):
        m.observe(f"a{i}", "a", 1)
        m.observe(f"b{i}", "b", 1)
    for i in range(29):
        m.observe(f"c{i}", "c", 0)
    snap = m.snapshot()
    assert (snap.demographic_parity_difference, snap.alerts) == (0.0, ())
    assert snap.demographic_parity_left_out == "c has 29 decisions (< 30)"
    m.observe("c29", "c", 0)
    snap = m.snapshot()
    assert (snap.demographic_parity_difference, snap.demographic_parity_left_out) == (1.0, None)


def test_a_rate_is_compared_only_over_enough_cases_of_its_own():
    """Review: 40 labelled decisions a group, one of them positive in each: a true positive rate of 1 of 1 against
    0 of 1 raised an equalized odds alert at 1.00."""
    m = RollingFairness(window=200, sensitive_feature="sex", alert_dp_difference=None)
    for group, selected in (("a", 1), ("b", 0)):
        for i in range(40):
            m.observe(f"{group}{i}", group, selected if i == 0 else 0)
            m.label(f"{group}{i}", int(i == 0))
    snap = m.snapshot()
    assert [(g.group, g.true_positive_rate, g.false_positive_rate) for g in snap.by_group] == [
        ("a", 1.0, 0.0), ("b", 0.0, 0.0)]
    assert (snap.equalized_odds_difference, snap.alerts) == (0.0, ())      # the false positive rates, 39 cases each
