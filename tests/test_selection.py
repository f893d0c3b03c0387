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


def test_a_metric_better_lower_crowns_the_lowest():
    d = choose_champion({"a": 3.0, "b": 1.0}, None, higher_is_better=False)
    assert d.champion == "b" and d.promoted
    assert not choose_champion({"a": 3.0, "b": 2.5}, "a", 1.0, higher_is_better=False).promoted
    assert choose_champion({"a": 3.0, "b": 1.5}, "a", 1.0, higher_is_better=False).champion == "b"


def test_metric_names_and_directions_come_from_one_place():
    from lookalike_models import metric_names as names
    from lookalike_models.config import SelectionConfig
    from lookalike_models.evaluation import audience_sizes

    assert names.STANDARD_METRICS[:2] == ["recall_at_1pct", "recall_at_2pct"] and names.STANDARD_METRICS[-1] == "gauc"
    assert SelectionConfig.model_json_schema()["properties"]["metric"]["enum"] == names.STANDARD_METRICS
    assert SelectionConfig().metric == names.DEFAULT_SELECTION_METRIC in names.STANDARD_METRICS
    assert (
        list(audience_sizes(1000, [0.005, 0.05]))
        == [names.size_label(0.005), names.size_label(0.05)]
        == [
            "0_5pct",
            "5pct",
        ]
    )
    assert names.recall_at("5pct") == "recall_at_5pct" and names.precision_at("1pct") == "precision_at_1pct"
    for name in ("recall_at_5pct", "gauc", "champion.gauc", "auc.vs_ref", "recall_at_5pct.vs_ref_low"):
        assert names.higher_is_better(name)
    assert not names.higher_is_better(names.FIT_SECONDS)
