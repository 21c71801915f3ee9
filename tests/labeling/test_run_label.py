"""Run mode `label` (--config=label_preferences): end to end through src/main.py, reuse and refusal of an existing
set, bad inputs with clear errors."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.labeling.datasets import write_dataset
from tests.labeling.test_store import flip_bytes

from labeling import LABELERS
from labeling.base import LabelResult
from labeling.store import preference_names, read_preferences
from offline.format import DatasetError
from run.label import run_label
from utils.config import ConfigError, build_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG = logging.getLogger("test_label")


def label(tmp_path, **updates):
    config = build_config("label_preferences", "climbing",
                          {"local_results_path": str(tmp_path / "results"), "n_pairs": 100, **updates})
    return run_label(None, config, LOG)


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "mix.h5", E=40)


def test_end_to_end_through_main(tmp_path, data):
    res = subprocess.run([sys.executable, "src/main.py", "--config=label_preferences", "--env-config=climbing",
                          "with", f"offline_dataset={data}", "labeler=oracle", "n_pairs=300", "label_name=gt",
                          f"local_results_path={tmp_path / 'results'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "Labeling 300 trajectory_preference items" in out and "Stored 'gt' (300 items)" in out
    pairs, label_, attrs = read_preferences(data, "gt")
    assert pairs.shape == (300, 2) and not np.isnan(label_).any()
    assert attrs["settings"]["labeler"] == "oracle" and attrs["accuracy"]["agreement_return"] == 1.0
    assert attrs["code"]["commit"] and attrs["source_file"] == data
    run_dir = tmp_path / "results" / "sacred" / "label_preferences" / "climbing" / "1"
    info = json.load(open(run_dir / "info.json"))["labeling"]
    assert info["path"] == data and info["counts"]["labeled"] == 300 and info["items_per_s"] > 0


def test_rerun_keeps_refuses_or_overwrites(tmp_path, data, caplog):
    caplog.set_level(logging.INFO, logger="test_label")
    first = label(tmp_path, offline_dataset=data, labeler="noisy_oracle")
    assert first["reused"] is False and first["counts"]["labeled"] == 100
    before = read_preferences(data, "prefs")
    again = label(tmp_path, offline_dataset=data, labeler="noisy_oracle")
    assert again["reused"] is True and "kept" in caplog.text
    np.testing.assert_array_equal(read_preferences(data, "prefs")[1], before[1])
    with pytest.raises(ValueError, match="other settings: oracle_accuracy: stored 0.75, requested 0.9.*"
                                         "label_overwrite=True"):
        label(tmp_path, offline_dataset=data, labeler="noisy_oracle", oracle_accuracy=0.9)
    res = label(tmp_path, offline_dataset=data, labeler="noisy_oracle", oracle_accuracy=0.9, label_overwrite=True)
    assert res["reused"] is False and read_preferences(data, "prefs")[2]["settings"]["oracle_accuracy"] == 0.9
    # another name is another set; label_out writes a copy and leaves the dataset as it was
    out = str(tmp_path / "out" / "labelled.h5")
    label(tmp_path, offline_dataset=data, label_name="gt2", label_out=out)
    assert preference_names(data) == ["prefs"] and preference_names(out) == ["gt2", "prefs"]


@pytest.mark.parametrize("other_accuracy", [0.75, 0.9])
def test_a_set_stored_meanwhile_is_kept_when_the_same_and_refused_otherwise(tmp_path, data, caplog, monkeypatch,
                                                                            other_accuracy):
    """Another run of the same label_name finishes while this one labels (two runs sharing an LLM cache): its
    complete set of this run's settings is kept as a rerun would keep it; one of other settings is refused."""
    caplog.set_level(logging.INFO, logger="test_label")
    cls = LABELERS["noisy_oracle"]
    own = cls.label

    def meanwhile(self, *a, **kw):
        monkeypatch.setattr(cls, "label", own)
        label(tmp_path, offline_dataset=data, labeler="noisy_oracle", oracle_accuracy=other_accuracy)
        return own(self, *a, **kw)

    monkeypatch.setattr(cls, "label", meanwhile)
    if other_accuracy != 0.75:
        with pytest.raises(ConfigError, match="other settings: oracle_accuracy: stored 0.9, requested 0.75.*"
                                              "label_overwrite=True"):
            label(tmp_path, offline_dataset=data, labeler="noisy_oracle", oracle_accuracy=0.75)
        assert read_preferences(data, "prefs")[2]["settings"]["oracle_accuracy"] == other_accuracy
        return
    before = read_preferences(data, "prefs") if "prefs" in preference_names(data) else None
    res = label(tmp_path, offline_dataset=data, labeler="noisy_oracle")
    assert before is None and res["reused"] is True and res["counts"]["labeled"] == 100
    assert "stored meanwhile by another run with the same settings" in caplog.text
    assert read_preferences(data, "prefs")[2]["created"] and preference_names(data) == ["prefs"]


def stopped_after(own, n):
    """Labeler method `own` as one that stopped after its first n answers (an LLM budget); None: complete."""

    def go(self, *a, **kw):
        result = own(self, *a, **kw)
        if n is not None:
            result.answers[n:] = np.nan
            result.info.update(labeled=n, complete=False)
        return result
    return go


@pytest.mark.parametrize("theirs, ours, kept", [(None, 30, "theirs"), (60, None, "ours"), (60, 30, "theirs"),
                                                (30, 60, "ours")])
def test_a_set_stored_meanwhile_is_kept_or_replaced_as_a_rerun_would(tmp_path, data, caplog, monkeypatch, theirs,
                                                                      ours, kept):
    """The other run's set of the same settings (None: complete; n: stopped after n labels) against this run's: a
    complete one is kept (whatever this run has); an incomplete one is replaced by a complete one; of two
    incomplete ones the one with more labels stays, with a warning that a rerun labels the rest."""
    caplog.set_level(logging.INFO, logger="test_label")
    cls = LABELERS["noisy_oracle"]
    own = cls.label

    def meanwhile(self, *a, **kw):
        monkeypatch.setattr(cls, "label", stopped_after(own, theirs))
        label(tmp_path, offline_dataset=data, labeler="noisy_oracle")
        return stopped_after(own, ours)(self, *a, **kw)

    monkeypatch.setattr(cls, "label", meanwhile)
    res = label(tmp_path, offline_dataset=data, labeler="noisy_oracle")
    want = 100 if (theirs if kept == "theirs" else ours) is None else (theirs if kept == "theirs" else ours)
    attrs = read_preferences(data, "prefs")[2]
    assert res["reused"] is (kept == "theirs") and res["counts"]["labeled"] == attrs["counts"]["labeled"] == want
    assert attrs["complete"] is (want == 100) and preference_names(data) == ["prefs"]
    both = theirs is not None and ours is not None
    assert ("both are incomplete" in caplog.text and "rerun the same command to label the rest" in caplog.text) is both


def test_a_damaged_set_is_never_kept_and_label_overwrite_replaces_it(tmp_path, data):
    """A set failing its checksum, asked for again with the same settings: an error naming scripts/edit_labels.py
    and label_overwrite=True (not 'kept'); with label_overwrite=True it is labeled again and replaced."""
    label(tmp_path, offline_dataset=data, labeler="oracle")
    flip_bytes(data, "preferences/prefs/pairs")
    with pytest.raises(DatasetError, match=r"'preferences/prefs' is damaged \(its stored bytes fail their checksum.*"
                                           r"python scripts/edit_labels.py .* --remove-preference-set prefs.*"
                                           r"label_overwrite=True"):
        label(tmp_path, offline_dataset=data, labeler="oracle")
    res = label(tmp_path, offline_dataset=data, labeler="oracle", label_overwrite=True)
    assert res["reused"] is False and res["counts"]["labeled"] == 100
    pairs, _, attrs = read_preferences(data, "prefs")
    assert pairs.shape == (100, 2) and attrs["settings"]["labeler"] == "oracle"
    assert label(tmp_path, offline_dataset=data, labeler="oracle")["reused"] is True  # sound again: kept




@pytest.mark.parametrize("updates, error, match", [
    ({"labeler": "orcale"}, ValueError, r"unknown labeler 'orcale'; choose one of \[.*'oracle'.*did you mean oracle"),
    ({"label_task": "nope"}, ValueError, "unknown label_task 'nope'"),
    ({"label_name": ""}, ValueError, "label_name must be a non-empty name"),
    ({"label_name": "a/b"}, ValueError, "label_name must be a non-empty name"),
    ({"label_name": "."}, ConfigError, r"not '\.' or '\.\.'"),
    ({"label_name": ".."}, ConfigError, "label_name must be a non-empty name"),
    ({"label_name": "codi_z"}, ConfigError, r"label_name=codi_z is a name augmenter codi stores its own labels "
                                             r"under \(labels/codi_z or codi_z_\* of the dataset\); choose another"),
    ({"label_name": "codi_z_540b528f218b"}, ConfigError, r"label_name=codi_z_540b528f218b is a name augmenter codi"),
    ({"label_out": "."}, ConfigError, r"label_out=\. is a folder; give the path of a dataset file"),
    ({"n_pairs": 781}, ValueError, "n_pairs=781 is more than the 780 distinct pairs of 40 episodes"),
    ({"offline_dataset": "nowhere.h5"}, DatasetError, "offline_dataset nowhere.h5 does not exist"),
    ({"offline_dataset": ""}, ValueError, "run=label needs a dataset"),
    ({"oracle_key": "score"}, ValueError, "unknown oracle_key 'score'"),
])
def test_bad_inputs(tmp_path, data, updates, error, match):
    with pytest.raises(error, match=match):
        label(tmp_path, **{"offline_dataset": data, **updates})
    assert preference_names(data) == []


def test_a_dataset_of_another_env_is_refused(tmp_path, data):
    config = build_config("label_preferences", "climbing", {"offline_dataset": data, "env_args": {"game": "penalty"}})
    with pytest.raises(ValueError, match="env_args"):
        run_label(None, config, LOG)


def test_a_stopped_labeler_stores_what_it_has_and_a_rerun_continues(tmp_path, data, monkeypatch):
    import labeling
    from labeling.oracle import OracleLabeler

    class Budgeted(OracleLabeler):
        """Answers the first `budget` items, as the llm labeler does when max_requests is reached."""
        name = "budgeted"
        budget = 40

        def label(self, task, items, source, bar=None):
            res = super().label(task, items, source, bar)
            res.answers[self.budget:] = np.nan
            stopped = "max_requests=40 reached" if self.budget < len(items) else None
            res.info.update(stopped=stopped, labeled=int(np.isfinite(res.answers).sum()))
            return res

    monkeypatch.setitem(labeling.LABELERS, "budgeted", Budgeted)
    first = label(tmp_path, offline_dataset=data, labeler="budgeted")
    stored = read_preferences(data, "prefs")
    assert first["counts"]["labeled"] == 40 and np.isnan(stored[1][40:]).all() and stored[2]["complete"] is False
    assert first["accuracy"]["unlabeled_rate"] == pytest.approx(0.6)
    Budgeted.budget = 1000
    again = label(tmp_path, offline_dataset=data, labeler="budgeted")
    assert again["reused"] is False and read_preferences(data, "prefs")[2]["complete"] is True
    assert not np.isnan(read_preferences(data, "prefs")[1]).any()
    assert label(tmp_path, offline_dataset=data, labeler="budgeted")["reused"] is True


def test_the_task_parses_replies_with_the_llm_parser():
    from labeling import TASKS
    task = TASKS["trajectory_preference"]()
    assert [task.parse(t, None) for t in ("I pick #1", "#2", "equal: #0", "no idea")] == [1.0, 0.0, 0.5, None]


def test_an_unreachable_server_fails_the_run_with_its_error_and_stores_nothing(tmp_path, data, caplog):
    """Every request refused (nothing listens on port 9): the run fails and says why, instead of storing an empty
    set with exit 0; nothing is written to the dataset."""
    before = open(data, "rb").read()
    with pytest.raises(RuntimeError, match=r"every one of the 6 items failed, nothing was stored; the first error: "
                                           r".*LLMUnavailable.*127\.0\.0\.1:9.*llm\.base_url"):
        label(tmp_path, offline_dataset=data, labeler="llm", n_pairs=6, label_name="llm1",
              llm={"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "max_retries": 0,
                   "timeout_s": 2, "cache_dir": str(tmp_path / "cache")})
    assert open(data, "rb").read() == before and "llm1" not in preference_names(data)


def test_label_out_holding_another_dataset_is_refused_and_left_as_it_is(tmp_path, data):
    other = write_dataset(tmp_path / "other.h5", E=30)
    before = open(other, "rb").read()
    with pytest.raises(ValueError, match=r"label_out=.*other.h5 exists and holds other episodes than .*mix.h5 .*"
                                         r"choose another label_out .*other.h5 is left as it is"):
        label(tmp_path, offline_dataset=data, labeler="oracle", n_pairs=10, label_out=other)
    assert open(other, "rb").read() == before


def test_label_out_that_is_not_a_dataset_is_named(tmp_path, data):
    junk = tmp_path / "notes.h5"
    junk.write_text("not HDF5")
    with pytest.raises(ConfigError, match=r"label_out=.*notes.h5 exists and is not a dataset file"):
        label(tmp_path, offline_dataset=data, label_out=str(junk))
    assert junk.read_text() == "not HDF5"


def test_label_out_finds_the_sources_set_before_labeling(tmp_path, data, caplog, monkeypatch):
    """A set of the same name in the dataset is what a new label_out copy would hold: with the same settings it is
    reused (and the copy written) without asking the labeler; with other settings refused before any item, naming
    the dataset (not the label_out file that does not exist)."""
    from labeling.oracle import OracleLabeler
    caplog.set_level(logging.INFO, logger="test_label")
    label(tmp_path, offline_dataset=data)
    asked = []
    original = OracleLabeler.label
    monkeypatch.setattr(OracleLabeler, "label", lambda self, *a, **k: asked.append(1) or original(self, *a, **k))
    out = str(tmp_path / "copy.h5")
    res = label(tmp_path, offline_dataset=data, label_out=out)
    assert res["reused"] is True and not asked and preference_names(out) == ["prefs"] and res["path"] == out
    other = str(tmp_path / "copy2.h5")
    with pytest.raises(ValueError, match=r"mix.h5 already has 'prefs' .* other settings: n_pairs"):
        label(tmp_path, offline_dataset=data, label_out=other, n_pairs=50)
    assert not asked and not os.path.exists(other)


def test_relabeling_warns_about_labels_derived_from_the_old_set(tmp_path, data, caplog):
    from offline import OfflineDataset
    from offline.label_store import preference_set_id, write_episode_labels
    from offline.sampling import label_rows
    caplog.set_level(logging.INFO, logger="test_label")
    label(tmp_path, offline_dataset=data)
    fingerprint = read_preferences(data, "prefs")[2]["content_fingerprint"]
    write_episode_labels(data, {"prefs_expert": np.ones(40, dtype=np.uint8)},
                         {"preference_set": "prefs", "preference_set_id": preference_set_id(data, "prefs")},
                         fingerprint)
    assert label_rows(OfflineDataset.load(data), "label:prefs_expert", "offline_expert", "").sum() == 40
    label(tmp_path, offline_dataset=data, labeler="noisy_oracle", label_overwrite=True)
    assert "labels ['prefs_expert'] were derived from the replaced preference set 'prefs'" in caplog.text
    with pytest.raises(ValueError, match=r"offline_expert=label:prefs_expert: labels/prefs_expert was derived from "
                                         r"preference set 'prefs', which has been replaced since.*label_overwrite"):
        label_rows(OfflineDataset.load(data), "label:prefs_expert", "offline_expert", "")


class Plain(LABELERS["oracle"]):
    """A labeler whose info holds no counts: the run counts its answers (labeled, tie, unparsed) itself."""
    name = "plain"

    def label(self, task, items, source, bar=None):
        result = super().label(task, items, source, bar)
        result.answers[:3] = np.nan
        return LabelResult(result.answers, {})


class Failing(LABELERS["oracle"]):
    """Two of its NaN answers failed (it says so), one it could not parse (it does not say so)."""
    name = "failing"

    def label(self, task, items, source, bar=None):
        result = super().label(task, items, source, bar)
        result.answers[:3] = np.nan
        return LabelResult(result.answers, {"failed": 2})


class Bare(LABELERS["oracle"]):
    name = "bare"

    def label(self, task, items, source, bar=None):
        return super().label(task, items, source, bar).answers


class Short(LABELERS["oracle"]):
    name = "short"

    def label(self, task, items, source, bar=None):
        result = super().label(task, items, source, bar)
        return LabelResult(result.answers[:-1], result.info)


def test_counts_left_out_by_a_labeler_are_counted_from_its_answers(tmp_path, data, monkeypatch, caplog):
    monkeypatch.setitem(LABELERS, "plain", Plain)
    with caplog.at_level(logging.INFO, logger="test_label"):
        info = label(tmp_path, offline_dataset=data, labeler="plain")
    assert info["counts"]["labeled"] == 97 and info["counts"]["unparsed"] == 3
    assert isinstance(info["counts"]["tie"], int) and "None" not in caplog.text


def test_answers_a_labeler_gives_a_reason_for_are_not_also_counted_unparsed(tmp_path, data, monkeypatch):
    monkeypatch.setitem(LABELERS, "failing", Failing)
    counts = label(tmp_path, offline_dataset=data, labeler="failing")["counts"]
    assert (counts["labeled"], counts["failed"], counts["unparsed"]) == (97, 2, 1)


@pytest.mark.parametrize("cls,error,match", [
    (Bare, TypeError, r"labeler 'bare' \(Bare\) returned a numpy.ndarray; label\(\) must return "
                      r"labeling.base.LabelResult\(answers, info\)"),
    (Short, ValueError, r"labeler 'short' \(Short\) returned answers of shape \(99,\) for 100 items; expected a numpy "
                        r"array of shape \(100,\)"),
])
def test_a_wrong_result_names_the_labeler_and_what_is_expected(tmp_path, data, monkeypatch, cls, error, match):
    monkeypatch.setitem(LABELERS, cls.name, cls)
    with pytest.raises(error, match=match):
        label(tmp_path, offline_dataset=data, labeler=cls.name)
    assert preference_names(data) == []
