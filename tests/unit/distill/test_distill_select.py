"""Trust-level classification and the diverse choice of candidates."""

from __future__ import annotations

import numpy as np
import pytest

from lamforge.distill.select import TrustLevels, farthest_point_sampling, select_frames


def test_classification_by_trust_levels():
    deviations = np.array([0.01, 0.05, 0.2, 0.5, 0.51, 3.0, 0.049])
    selection = select_frames(deviations, TrustLevels(low=0.05, high=0.5, max_candidates=10))
    assert selection.accurate.tolist() == [0, 6]
    assert selection.candidates.tolist() == [1, 2, 3]
    assert selection.rejected.tolist() == [4, 5]
    assert selection.chosen.tolist() == [1, 2, 3]
    assert selection.fractions() == pytest.approx((2 / 7, 3 / 7, 2 / 7))


def test_farthest_point_sampling_picks_spread_points():
    # Two tight clusters and one outlier: three picks cover all three groups.
    features = np.array([[0.0], [0.01], [0.02], [5.0], [5.01], [10.0]])
    picks = farthest_point_sampling(features, 3, first=0)
    assert picks.tolist() == [0, 5, 3]
    assert len(farthest_point_sampling(features, 50)) == 6


def test_capped_candidates_are_diverse_and_include_the_worst():
    rng = np.random.default_rng(0)
    deviations = rng.uniform(0.1, 0.4, size=40)
    # Frames come in near-duplicate pairs (consecutive MD frames); features say so.
    features = np.repeat(rng.normal(size=(20, 3)), 2, axis=0)
    selection = select_frames(
        deviations, TrustLevels(low=0.05, high=0.5, max_candidates=10), features
    )
    assert len(selection.chosen) == 10
    assert int(np.argmax(deviations)) in selection.chosen
    # No two chosen frames are duplicates of each other.
    assert len({tuple(features[i]) for i in selection.chosen}) == 10
    stratified = select_frames(deviations, TrustLevels(low=0.05, high=0.5, max_candidates=5))
    assert len(stratified.chosen) == 5
    assert {int(np.argmin(deviations)), int(np.argmax(deviations))} <= set(stratified.chosen)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="low < high"):
        TrustLevels(low=0.5, high=0.1)
    with pytest.raises(ValueError, match="finite"):
        select_frames(np.array([0.1, np.nan]), TrustLevels())
    with pytest.raises(ValueError, match="2 feature rows for 3 frames"):
        select_frames(np.array([0.1, 0.2, 0.3]), TrustLevels(max_candidates=1), np.zeros((2, 1)))
