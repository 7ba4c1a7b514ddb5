"""The report's quality bar: each line states its measured ratio and whether the bar is met."""

import numpy as np
import pytest

from eges.evaluation.report import quality_bar


def summary(**means):
    return {
        m: ({"n/a": True} if v is None else {k: {"mean": x, "std": 0.0} for k, x in v.items()})
        for m, v in means.items()
    }


def results(next_served: float, deepwalk_prior: float = 0.130) -> dict:
    cold = summary(
        **{
            "eges·ctx·table": {"hr@50": 0.40, "recall@50": 0.086},
            "eges·table": {"hr@50": 0.30, "recall@50": 0.05},
            "content": {"hr@50": 0.285, "recall@50": 0.046},
            "popularity": {"hr@50": 0.281, "recall@50": 0.048},
        }
    )
    nxt = summary(
        **{
            "eges·ctx·table": {"hr@50": next_served},
            "deepwalk·ctx": {"hr@50": 0.134},
            "deepwalk·ctx·prior": {"hr@50": deepwalk_prior},
            "cooccurrence": {"hr@50": 0.120},
        }
    )
    link = summary(eges={"auc": 0.76}, ges={"auc": 0.77}, bge={"auc": 0.75})
    return {
        "tasks": {"cold": {"summary": cold}, "next": {"summary": nxt}, "link": {"summary": link}}
    }


def test_served_rows_come_first_with_their_ratio_and_verdict():
    lines = quality_bar(results(0.122))
    assert lines[0].startswith(
        "- cold start hr@50: EGES, served table (H·Z + prior, default) 0.4000"
    )
    assert "1.404×" in lines[0] and lines[0].endswith("bar 1.3×: met")  # 0.40 / 0.285
    assert (
        lines[1].startswith("- cold start recall@50: EGES, served table") and "1.792×" in lines[1]
    )  # 0.086 / 0.048
    assert "EGES, cosine table 0.3000" in lines[2] and lines[2].endswith("not met")
    (nxt,) = [line for line in lines if line.startswith("- next item")]
    assert "(no interval)" in lines[0]  # results without per-query intervals: point estimates
    assert "0.1220" in nxt and nxt.endswith("not met")  # below DeepWalk's 0.134
    assert lines[-1].endswith("EGES ≥ GES ≥ BGE: no")


def test_next_item_bar_is_met_only_above_both_peers():
    (nxt,) = [line for line in quality_bar(results(0.135)) if line.startswith("- next item")]
    assert nxt.endswith("above each: met")


def test_next_item_bar_counts_deepwalk_with_the_popularity_prior_too():
    lines = quality_bar(results(0.135, deepwalk_prior=0.136))
    (nxt,) = [line for line in lines if line.startswith("- next item")]
    assert "DeepWalk, H·Z + prior 0.1360" in nxt and nxt.endswith("above each: not met")


def with_intervals(res: dict, task: str, entries: list[tuple]) -> dict:
    res["tasks"][task]["intervals"] = [
        {"kind": k, "model": m, "against": a, "metric": key, "estimate": e, "low": lo, "high": hi}
        for k, m, a, key, e, lo, hi in entries
    ]
    return res


def test_a_bar_is_met_only_when_its_interval_clears_it():
    served = "eges·ctx·table"
    base = ["popularity", "content"]
    res = with_intervals(
        results(0.140),
        "cold",
        [
            ("ratio", served, base, "hr@50", 1.40, 1.33, 1.47),  # clears 1.3
            ("ratio", served, base, "recall@50", 1.79, 1.25, 2.30),  # reaches below 1.3
        ],
    )
    res = with_intervals(
        res,
        "next",
        [("difference", served, [p], "hr@50", 0.006, 0.001, 0.011) for p in ("deepwalk·ctx",)]
        + [("difference", served, ["deepwalk·ctx·prior"], "hr@50", 0.01, -0.002, 0.02)]
        + [("difference", served, ["cooccurrence"], "hr@50", 0.02, 0.01, 0.03)],
    )
    lines = quality_bar(res)
    assert "(95% interval 1.33–1.47×)" in lines[0] and lines[0].endswith("bar 1.3×: met")
    assert "1.792×" in lines[1] and lines[1].endswith("bar 1.3×: not met")  # 1.79 but low 1.25
    (nxt,) = [line for line in lines if line.startswith("- next item HR@50")]
    assert "(difference -0.0020 to +0.0200)" in nxt
    assert nxt.endswith("above each: not met")  # above DeepWalk + prior on average, not surely


def per_query_runs(rng, rates: dict[str, float], n: int = 2000) -> dict:
    """One seed of per-query MRR values per scorer, hits at the given rates."""
    return {name: [{"mrr": (rng.random(n) < r).astype(float)}] for name, r in rates.items()}


def test_the_served_score_is_chosen_on_validation_and_cosine_when_behaviour_adds_little():
    from eges.evaluation.evaluate import choose_serving

    rng = np.random.default_rng(0)
    rates = {"eges": 0.05, "content": 0.04, "eges·ctx·β0": 0.10, "eges·ctx·β0.2": 0.14}
    rates.update({"eges·ctx·β0.1": 0.12, "eges·ctx·β0.4": 0.13, "eges·ctx·β0.8": 0.08})
    choice = choose_serving(per_query_runs(rng, rates))
    assert (choice["metric"], choice["popularity_prior"]) == ("context", 0.2)
    assert choice["cooccurrence_weight"] == 0
    assert choice["behaviour_signal"] and choice["against_content"]["low"] > 0
    assert set(choice["scores"]) == {"cosine"} | {
        f"context β {b:g}" for b in (0, 0.1, 0.2, 0.4, 0.8)
    }
    # the co-occurrence term is part of the grid: its best (β, γ) wins when it scores best
    rates.update({"eges·ctx·β0.4·γ1": 0.18, "eges·ctx·β0.4·γ2": 0.16, "eges·ctx·β0·γ0.5": 0.11})
    choice = choose_serving(per_query_runs(np.random.default_rng(1), rates))
    assert (choice["metric"], choice["popularity_prior"]) == ("context", 0.4)
    assert choice["cooccurrence_weight"] == 1
    assert {"context β 0.4 γ 1", "context β 0.4 γ 2", "context β 0 γ 0.5"} < set(choice["scores"])
    for key in ("eges·ctx·β0.4·γ1", "eges·ctx·β0.4·γ2", "eges·ctx·β0·γ0.5"):
        del rates[key]
    # a log whose behaviour says little: side information does as well as any served score;
    # the best is kept while cosine is surely worse
    rates["content"] = 0.14
    choice = choose_serving(per_query_runs(rng, rates))
    assert (choice["metric"], choice["popularity_prior"]) == ("context", 0.2)
    assert not choice["behaviour_signal"] and choice["best_against_cosine"]["low"] > 0
    # ... and cosine is served when it is as good as the best
    rates["eges"] = 0.135
    choice = choose_serving(per_query_runs(rng, rates))
    assert (choice["metric"], choice["behaviour_signal"]) == ("cosine", False)
    assert choice["cooccurrence_weight"] == 0
    assert choose_serving({"content": [{"mrr": np.ones(3)}]}) is None


def test_cold_start_chooses_new_items_score_from_the_prior_alone():
    """On the cold task the grid has no co-occurrence term (a new item followed nothing), and
    the choice is for new items (eges embed)."""
    from eges.evaluation.evaluate import choose_serving

    rng = np.random.default_rng(0)
    rates = {"eges": 0.20, "content": 0.05, "eges·ctx·β0": 0.10, "eges·ctx·β0.4": 0.12}
    rates["eges·ctx·β0.4·γ1"] = 0.5  # not of this task's grid: never chosen
    choice = choose_serving(per_query_runs(rng, rates), task="cold")
    assert (choice["metric"], choice["use"], choice["task"]) == ("cosine", "new_items", "cold")
    assert set(choice["scores"]) == {"cosine", "context β 0", "context β 0.4"}
    assert choice["chosen_by"].startswith("cold start mrr")


def test_cold_start_chooses_new_items_field_weights_with_their_score():
    """Field-weight variants are candidates with every score of the cold grid; the winner's
    weights go with the choice, and the run's own weights win ties."""
    from eges.evaluation.evaluate import choose_serving

    rates = {"eges": 0.05, "content": 0.04, "eges·ctx·β0.4": 0.12, "eges·ctx·β0.8": 0.11}
    rates.update({"eges·w(year×2)": 0.05, "eges·ctx·β0.4·w(year×2)": 0.10})
    rates.update({"eges·ctx·β0.8·w(year×2)": 0.16, "eges·ctx·β0.8·w(genres×0.5)": 0.13})
    weightings = {
        "w(year×2)": {"genres": 1.0, "year": 2.0},
        "w(genres×0.5)": {"genres": 0.5, "year": 1.0},
    }
    choice = choose_serving(
        per_query_runs(np.random.default_rng(0), rates), None, "cold", weightings
    )
    assert (choice["metric"], choice["popularity_prior"]) == ("context", 0.8)
    assert choice["field_weights"] == {"genres": 1.0, "year": 2.0}
    assert abs(choice["scores"]["context β 0.8 w(year×2)"] - 0.16) < 0.02
    # the same MRRs for a variant and the run's own weights: the run's own are kept
    same = {k: 0.12 for k in rates if k != "content"} | {"content": 0.04}
    runs = {k: [{"mrr": np.full(100, v)}] for k, v in same.items()}
    choice = choose_serving(runs, None, "cold", weightings)
    assert choice["field_weights"] is None and choice["metric"] == "cosine"


def test_the_screen_summary_shows_both_link_aucs_and_leaves_the_beta_variants_to_the_report(
    tmp_path,
):
    from eges.evaluation.report import summary_text

    res = results(0.14)
    res["tasks"]["link"]["summary"] = summary(
        eges={"auc": 0.76, "auc_matched": 0.74}, popularity={"auc": 0.87, "auc_matched": 0.52}
    )
    res["tasks"]["next"]["summary"]["eges·ctx·β0.2"] = {"hr@50": {"mean": 0.5, "std": 0.0}}
    res["seconds"] = 12.0
    lines = summary_text(res, tmp_path).splitlines()
    assert "  link  auc     eges 0.760  popularity 0.870" in lines
    assert "  link  auc_matched eges 0.740  popularity 0.520" in lines
    (nxt,) = [line for line in lines if line.startswith("  next  ")]
    assert "·β" not in nxt and "cooccurrence 0.120" in nxt


def test_the_report_says_what_each_choice_serves_and_whether_cosine_is_served():
    """The section names the use (the neighbour table's choice, or new items' for eges embed),
    and says cosine is served only when it is: a weak behaviour signal alone does not mean it."""
    from eges.evaluation.report import serving_section

    base = {
        "metric": "context",
        "popularity_prior": 0.4,
        "cooccurrence_weight": 2.0,
        "chosen_by": "next item mrr on a validation hold-out",
        "scores": {"context β 0.4 γ 2": 0.03, "cosine": 0.01},
        "behaviour_signal": False,
        "content": 0.02,
        "against_content": {"estimate": 0.01, "low": -0.001, "high": 0.02},
        "use": "neighbors",
        "written_to": "RUN/serving.json",
    }
    text = "\n".join(serving_section(base))
    assert "H·Z + 0.4·ln(walk count) + 2·ln(1 + co-occurrences)" in text
    assert "cosine is surely worse than the best, which is served" in text
    assert "`eges neighbors` serves" in text and "for new items" not in text
    cosine = {**base, "metric": "cosine", "use": "new_items"}
    text = "\n".join(serving_section(cosine))
    assert "validation for new items" in text and "`eges embed` serves it" in text
    assert "so cosine (whose vectors carry the side information) is served" in text
    # many candidates (field-weight variants): the best 12, and the one served when it is not
    # among them; the chosen field weights are named
    many = {f"context β 0.4 w(genres×{i})": 0.05 + i / 1000 for i in range(20)}
    many["cosine"] = 0.001
    text = "\n".join(serving_section({**cosine, "scores": many, "candidate": "cosine"}))
    assert "(the best 12 of 21, and the one served)" in text and "cosine 0.0010" in text
    assert "w(genres×0) 0.0500" not in text  # below the best 12
    weighted = {**base, "scores": many, "candidate": "context β 0.4 w(genres×19)"}
    weighted["field_weights"] = {"genres": 19.0, "year": 1.0}
    text = "\n".join(serving_section(weighted))
    assert "side-info field weights genres 19, year 1" in text
    assert "(the best 12 of 21):" in text and "Candidates marked w(field×m)" in text


def test_link_lines_compare_the_served_score_with_each_peer_and_state_the_ordering():
    res = results(0.135)
    res["tasks"]["link"]["summary"].update(
        summary(
            **{
                "eges·ctx": {"auc": 0.90, "auc_matched": 0.69},
                "deepwalk·ctx·prior": {"auc": 0.83, "auc_matched": 0.70},
                "popularity": {"auc": 0.87, "auc_matched": 0.52},
            }
        )
    )
    res = with_intervals(
        res,
        "link",
        [
            ("difference", "eges·ctx", ["deepwalk·ctx·prior"], "auc", 0.07, 0.06, 0.08),
            ("difference", "eges·ctx", ["popularity"], "auc", 0.03, 0.02, 0.04),
            ("difference", "eges·ctx", ["deepwalk·ctx·prior"], "auc_matched", -0.01, -0.02, 0.0),
            ("difference", "eges·ctx", ["popularity"], "auc_matched", 0.17, 0.16, 0.18),
            ("difference", "eges", ["ges"], "auc", -0.01, -0.02, 0.0),
            ("difference", "ges", ["bge"], "auc", 0.02, 0.01, 0.03),
        ],
    )
    lines = [line for line in quality_bar(res) if line.startswith("- link prediction")]
    uniform, matched, order = lines
    assert uniform.startswith("- link prediction AUC: EGES, H·Z + prior 0.9000 vs")
    assert "popularity 0.8700 (difference +0.0200 to +0.0400)" in uniform
    assert uniform.endswith("surely above each: yes")
    assert matched.endswith("surely above each: no")  # DeepWalk's interval reaches 0
    assert order.endswith(
        "EGES ≥ GES ≥ BGE: no (95% intervals: EGES − GES -0.0200 to +0.0000; "
        "GES − BGE (ours) +0.0100 to +0.0300)"
    )


def test_cold_start_bar_pools_the_split_seeds():
    """Per-query values of two splits (split seeds), two training seeds each: pooled as each
    split's mean over seeds, the ratio's estimate from the mean of the splits' means, and the
    ratio on each split alone reported beside it, in the report's line too."""
    from eges.evaluation.evaluate import SplitResults, bar_intervals, pool_per_query

    rng = np.random.default_rng(5)

    def split(seed: int, n: int, served: float, content: float) -> SplitResults:
        def hits(rate: float) -> dict[str, np.ndarray]:
            return {k: (rng.random(n) < rate).astype(float) for k in ("hr@50", "recall@50")}

        per_query = {
            "eges·ctx·table": [hits(served), hits(served)],  # two training seeds
            "content": [hits(content)],
            "popularity": [hits(content / 2)],
        }
        return SplitResults(seed, {}, per_query, {}, {}, None, {}, None)

    # split seed 5 first: the intervals' per_split follow the splits' order, not the seeds'
    splits = [split(5, 3000, 0.6, 0.4), split(2, 1000, 0.3, 0.3)]
    pooled, groups, strata = pool_per_query(splits)
    assert groups is None and strata.tolist() == [0] * 3000 + [1] * 1000
    (served,) = pooled["eges·ctx·table"]
    first = splits[0].per_query["eges·ctx·table"]
    np.testing.assert_allclose(served["hr@50"][:3000], (first[0]["hr@50"] + first[1]["hr@50"]) / 2)
    ivs = bar_intervals("cold", pooled, groups, strata)
    iv = next(i for i in ivs if i["model"] == "eges·ctx·table" and i["metric"] == "hr@50")
    split_means = [
        {m: np.mean([r["hr@50"] for r in one.per_query[m]]) for m in one.per_query}
        for one in splits
    ]
    pooled_mean = {m: np.mean([s[m] for s in split_means]) for m in split_means[0]}
    assert iv["estimate"] == pytest.approx(
        pooled_mean["eges·ctx·table"] / max(pooled_mean["content"], pooled_mean["popularity"])
    )
    assert iv["per_split"] == pytest.approx(
        [s["eges·ctx·table"] / max(s["content"], s["popularity"]) for s in split_means]
    )
    assert iv["per_split"][0] > 1.3 > iv["per_split"][1]  # split 1 has no gain
    res = results(0.140)
    res["tasks"]["cold"]["intervals"] = [{**i, "split_seeds": [5, 2]} for i in ivs]
    line = quality_bar(res)[0]
    low, high = iv["low"], iv["high"]
    a, b = iv["per_split"]
    assert f"(95% interval {low:.2f}–{high:.2f}×; per split seed 5: {a:.2f}, 2: {b:.2f})" in line
