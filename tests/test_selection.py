import pytest

from lookalike_models.selection import choose_champion


def test_first_night_crowns_the_best_model():
    d = choose_champion({"a": 0.3, "b": 0.5}, None)
    assert d.champion == "b" and d.promoted


def test_challenger_must_win_by_the_margin():
    assert not choose_champion({"a": 0.30, "b": 0.31}, "a", min_improvement=0.02).promoted
    d = choose_champion({"a": 0.30, "b": 0.35}, "a", min_improvement=0.02)
    assert d.champion == "b" and d.promoted


def test_champion_is_kept_when_it_is_still_best():
    d = choose_champion({"a": 0.4, "b": 0.35}, "a")
    assert d.champion == "a" and not d.promoted


def test_random_and_nan_models_can_be_excluded():
    d = choose_champion({"random": 0.9, "a": float("nan"), "b": 0.2}, None, eligible={"a", "b"})
    assert d.champion == "b"
    with pytest.raises(ValueError):
        choose_champion({"a": float("nan")}, None)


def test_a_champion_missing_tonight_is_replaced():
    d = choose_champion({"a": 0.1}, "gone")
    assert d.champion == "a" and d.promoted
