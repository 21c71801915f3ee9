"""src/results.py --study (analysis/study.py) on a synthetic sweep folder: rows named by the sweep entries, final
score, steps to the env's threshold, AUC, label accuracy and LLM tokens/cost from info.json's lca section, rows the
spec lists without runs shown 'not run' with their reason, and the figures."""
import json
import os
from datetime import datetime, timezone

import numpy as np
import pytest

from analysis.study import label_info
from results import main

T = [0, 1000, 2000, 3000, 4000]
# (entry name, alg, seed) -> test_success_mean curve
CURVES = {("mappo", "mappo", 1): [0, 0, 0.5, 0.9, 1.0], ("mappo", "mappo", 2): [0, 0, 0, 0, 0.5],
          ("lca_oracle", "lca_ippo", 1): [0, 0.9, 1, 1, 1], ("lca_oracle", "lca_ippo", 2): [0, 0, 0.95, 1, 1],
          ("lca_noisy70_k1", "lca_ippo", 1): [0, 0, 0, 0.2, 0.4]}
LCA = {"lca_oracle": {"labeling": {"labeler": "oracle", "accuracy": {"accuracy": 1.0}}},
       "lca_noisy70_k1": {"labeling": {"labeler": "llm", "accuracy": {"accuracy": 0.7}, "prompt_tokens": 900,
                                       "completion_tokens": 100, "cost_usd": 0.25}}}


def write_sweep(tmp_path):
    sacred, sweep = tmp_path / "sacred", tmp_path / "sweeps" / "lca_two_switch"
    sweep.mkdir(parents=True)
    entries = [{"alg": "mappo", "env": "two_switch", "name": "mappo"},
               {"alg": "lca_ippo", "env": "two_switch", "name": "lca_oracle", "with": {"labeler": "oracle"}},
               {"alg": "lca_ippo", "env": "two_switch", "name": "lca_noisy70_k1"}]
    trials = []
    for run_id, ((row, alg, seed), values) in enumerate(CURVES.items(), 1):
        d = sacred / alg / "two_switch" / str(run_id)
        d.mkdir(parents=True)
        # the two LCA rows differ in a config key (as the labeler settings do), like real runs
        config = {"run": "online", "env": "two_switch", "name": alg, "seed": seed, "t_max": 4000,
                  "labeler": row, "env_args": {"seed": seed}}
        json.dump(config, open(d / "config.json", "w"))
        beat = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
        json.dump({"status": "COMPLETED", "heartbeat": beat}, open(d / "run.json", "w"))
        info = {"test_success_mean": values, "test_success_mean_T": T, "success_mean": values,
                "success_mean_T": T, "test_return_mean": [2 * v - 1 for v in values], "test_return_mean_T": T}
        if row in LCA:
            info["lca"] = LCA[row]
        json.dump(info, open(d / "info.json", "w"))
        index = [e["name"] for e in entries].index(row) + 1
        trials.append({"id": f"{row}-s{seed}", "entry": index, "alg": alg, "env": "two_switch", "seed": seed,
                       "status": "COMPLETED", "sacred_run": str(d), "sacred_runs": [str(d)]})
    json.dump({"name": "lca_two_switch", "spec": {"entries": entries}, "trials": trials},
              open(sweep / "manifest.json", "w"))
    return str(sweep)


SPEC = {"title": "LCA test", "metric": "test_success_mean", "threshold": {"two_switch": 0.9},
        "curves": ["test_success_mean", "success_mean", "test_return_mean"],
        "rows": [{"env": "two_switch", "row": "mappo"}, {"env": "two_switch", "row": "qmix",
                                                         "not_run": "not asked for (--baselines)"},
                 {"env": "two_switch", "row": "lca_oracle"}, {"env": "two_switch", "row": "lca_noisy70_k1"},
                 {"env": "two_switch", "row": "lca_llm_k1", "not_run": "slow local LLM labeling"}],
        "figures": {"fig4_noise": {"title": "noise", "rows": ["lca_oracle", "lca_noisy70_k1", "lca_noisy80_k4"]}}}


@pytest.fixture
def study_files(tmp_path):
    sweep = write_sweep(tmp_path)
    spec_path = tmp_path / "spec.json"
    json.dump(SPEC, open(spec_path, "w"))
    out = tmp_path / "report"
    main([sweep, "--metric", "test_success_mean", "--study", str(spec_path), "--out", str(out), "--reps", "50"])
    return out


def test_rows_metrics_and_not_run_rows(study_files):
    rows = {r["row"]: r for r in json.load(open(study_files / "study.json"))["rows"]}
    assert list(rows) == ["mappo", "qmix", "lca_oracle", "lca_noisy70_k1", "lca_llm_k1"]  # the spec's order
    assert rows["qmix"]["status"] == "not run: not asked for (--baselines)" and "final" not in rows["qmix"]
    assert rows["lca_llm_k1"]["status"] == "not run: slow local LLM labeling"
    m, o, n = rows["mappo"], rows["lca_oracle"], rows["lca_noisy70_k1"]
    assert m["runs"] == 2 and m["final_mean"] == pytest.approx(0.75) and m["final_std"] == pytest.approx(0.25)
    assert m["to_threshold"]["steps"] == [3000.0, None] and m["to_threshold"]["reached"] == 1
    assert o["to_threshold"]["mean"] == 1500 and o["to_threshold"]["reached"] == 2
    assert n["to_threshold"]["reached"] == 0
    # AUC: trapezoids over [0, 4000] / 4000
    assert o["auc"][0] == pytest.approx((0.45 + 0.95 + 1 + 1) / 4) and o["auc_mean"] > m["auc_mean"]
    assert o["label_accuracy"] == 1.0 and o["tokens"] is None and o["cost_usd"] is None
    assert n["label_accuracy"] == 0.7 and n["tokens"] == 1000 and n["cost_usd"] == 0.25
    assert m["label_accuracy"] is None
    md = open(study_files / "study.md").read()
    assert "| two_switch | qmix | 0 |" in md and "not run: slow local LLM labeling" in md
    assert "1500 ± 500 (2/2)" in md and "3000 (1/2)" in md and "not reached (0/1)" in md
    assert "| 0.700 | 1000 | 0.2500 |" in md  # label accuracy, tokens, cost of the noisy row


def test_figures_are_written(study_files):
    assert (study_files / "fig4_noise.png").stat().st_size > 1000 and (study_files / "fig4_noise.pdf").exists()


def test_label_info_of_a_run_without_lca_is_n_a(tmp_path):
    assert label_info(str(tmp_path)) == {"label_accuracy": None, "tokens": None, "cost_usd": None}
    json.dump({"lca": {"labeling": {"accuracy": {"accuracy": 0.8}, "prompt_tokens": 5}}},
              open(os.path.join(tmp_path, "info.json"), "w"))
    assert label_info(str(tmp_path)) == {"label_accuracy": 0.8, "tokens": None, "cost_usd": None}


@pytest.mark.parametrize("key, value, named", [("metric", "test_sucess_mean", "the study's 'metric'"),
                                               ("curves", ["test_success_mean", "sucess_mean"], "a 'curves' entry")])
def test_a_metric_no_run_logs_is_refused_before_any_file(tmp_path, key, value, named):
    """A typo in the spec's metric once gave every row 'not run' and exit 0: it is an error, and no report is
    half-written."""
    sweep = write_sweep(tmp_path)
    spec_path = tmp_path / "spec.json"
    json.dump({**SPEC, key: value}, open(spec_path, "w"))
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as e:
        main([sweep, "--metric", "test_success_mean", "--study", str(spec_path), "--out", str(out), "--reps", "50"])
    missing = value if isinstance(value, str) else value[1]
    assert f"logs '{missing}' ({named})" in str(e.value) and "check its spelling" in str(e.value)
    assert not out.exists()


def test_a_running_seed_has_no_final_score_in_a_study_row():
    """row_metrics: a RUNNING seed is counted (status 'running (1 of 2)') but its last evaluation is no final; a row
    of running seeds only shows '–' for the final."""
    import numpy as np

    from analysis.study import markdown, row_metrics
    from utils.runs import Run

    def run(values, running):
        return Run(f"/r/{len(values)}{running}", "mappo", "two_switch", "online", {"t_max": 4000, "seed": 1}, running,
                   np.array(T[:len(values)], float), np.array(values, float))

    done, going = run([0, 0.5, 1.0, 1.0, 0.8], False), run([0, 0.1], True)
    m = row_metrics([done, going], threshold=0.9)
    assert (m["runs"], m["running"], m["final"], m["final_mean"], m["final_std"]) == (2, 1, [0.8], 0.8, 0.0)
    # its AUC so far and "not reached yet" are not a finished seed's: only the finished one counts
    assert len(m["auc"]) == 1 and m["to_threshold"]["reached"] == 1 and len(m["to_threshold"]["steps"]) == 1
    m = row_metrics([going], threshold=0.9)
    assert m["final"] == [] and m["final_mean"] is None and m["auc"] == [] and "to_threshold" not in m
    table = markdown({"metric": "test_success_mean"}, [{"env": "two_switch", "row": "mappo", "status": "running",
                                                       **m}])
    assert "| two_switch | mappo | 1 | – | – | – |" in table


def _run(kind, T, values, **config):
    from utils.runs import Run

    return Run("/nonexistent", kind, "lbf", kind, config, False, np.asarray(T, float), np.asarray(values, float))


def test_an_offline_rows_auc_budget_is_its_gradient_steps_and_a_mixed_study_says_so():
    from analysis.study import axis_label, markdown, row_metrics

    offline = _run("offline", [0, 3500, 7000], [0.0, 1.0, 1.0], t_max=250000, offline_steps=7000)
    online = _run("online", [0, 100000, 200000], [0.0, 1.0, 1.0], t_max=200000, offline_steps=7000)
    off, on = row_metrics([offline]), row_metrics([online])
    assert off["auc"] == [pytest.approx(0.75)] and off["kinds"] == ["offline"]  # over t_max: 0.993
    assert on["auc"] == [pytest.approx(0.75)]
    assert axis_label([offline]) == "gradient steps" and axis_label([online]) == "env steps"
    assert "different axes" in axis_label([offline, online])
    rows = [{"env": "lbf", "row": k, "status": "ok", **v} for k, v in (("bc", off), ("mappo", on))]
    md = markdown({"metric": "m"}, rows)
    assert "mixes online rows (x: env steps) and offline rows (x: gradient steps)" in md
    assert "offline_steps gradient steps (offline rows)" in md
    assert "mixes" not in markdown({"metric": "m"}, rows[:1])


def test_a_row_pooling_runs_of_very_different_lengths_is_named_under_the_table():
    from analysis.study import markdown, row_metrics

    short = _run("online", [0, 13626], [0.0, 0.5], t_max=20000)
    long = _run("online", [0, 239833], [0.0, 1.0], t_max=240000)
    rows = [{"env": "lbf", "row": "mappo", "status": "ok", **row_metrics([short, long])}]
    assert "runs of different lengths pooled in one group" in markdown({"metric": "m"}, rows)
    assert "mappo (lbf): 13626–239833" in markdown({"metric": "m"}, rows)
    rows = [{"env": "lbf", "row": "mappo", "status": "ok", **row_metrics([long, long])}]
    assert "different lengths" not in markdown({"metric": "m"}, rows)


def test_a_rows_failed_and_non_finite_seeds_are_counted_in_the_table(tmp_path):
    """4 seeds asked, one FAILED, one with a NaN final: study.md once showed runs 2 and steps to threshold (2/2), as
    if 2 seeds had been asked; so from a sweep and from the Sacred folders themselves."""
    sweep = write_sweep(tmp_path)
    manifest = json.load(open(os.path.join(sweep, "manifest.json")))
    for run_id, seed, status, final in ((90, 3, "FAILED", 1.0), (91, 4, "COMPLETED", float("nan"))):
        d = tmp_path / "sacred" / "lca_ippo" / "two_switch" / str(run_id)
        d.mkdir()
        json.dump({"run": "online", "env": "two_switch", "name": "lca_ippo", "seed": seed, "t_max": 4000,
                   "labeler": "lca_oracle", "env_args": {"seed": seed}}, open(d / "config.json", "w"))
        json.dump({"status": status}, open(d / "run.json", "w"))
        json.dump({"test_success_mean": [0, final], "test_success_mean_T": [0, 4000]}, open(d / "info.json", "w"))
        manifest["trials"].append({"id": f"lca_oracle-s{seed}", "entry": 2, "alg": "lca_ippo", "env": "two_switch",
                                   "seed": seed, "status": status, "sacred_run": str(d), "sacred_runs": [str(d)]})
    json.dump(manifest, open(os.path.join(sweep, "manifest.json"), "w"))
    spec_path = tmp_path / "spec.json"
    json.dump({"metric": "test_success_mean", "threshold": 0.9}, open(spec_path, "w"))
    for path, row in ((sweep, "lca_oracle"), (str(tmp_path / "sacred"), "lca_ippo")):
        out = tmp_path / row
        main([path, "--metric", "test_success_mean", "--study", str(spec_path), "--out", str(out), "--reps", "50",
              "--no-plots"])
        md = open(out / "study.md").read()
        scored = 2 if row == "lca_oracle" else 3  # outside the sweep, the noisy row's seed pools in lca_ippo
        assert f"| two_switch | {row} | {scored} of {scored + 2} (1 FAILED, 1 non-finite final) |" in md
        assert "| two_switch | mappo | 2 |" in md  # a row with every seed scored says no more
