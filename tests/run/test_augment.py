"""Run mode `augment` (--config=codi | codi_no_comp | codi_privileged | madiff_like) end to end on a tiny one-expert
MPE spread dataset (tests/labeling/codi_datasets.py): labelled with the oracle through src/main.py, augmented with
tiny models and few steps, the generated file merged with the source and trained on with BC; each config; stages
one by one equal `all`; an interrupted training resumed equals an uninterrupted one; every bad input of issue 15
section 11 stops with an error naming the fix."""
import glob
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import torch as th
from tests.labeling.codi_datasets import LIMIT, spread_env_args, write_one_expert_spread

from augmenters.codi.diffusion import SegmentDiffusion
from augmenters.codi.dynamics import DynamicsModels
from augmenters.codi.stitching import GenerationError
from helpers import ctrl_c_run, run_main, sacred_dir, write_random_dataset
from offline import OfflineDataset
from offline.format import DatasetError
from run.augment import run_augment
from utils.config import ConfigError, build_config
from utils.files import FolderLock

LOG = logging.getLogger("test_augment")
E = 30
TINY = {"diffusion_dim": 8, "diffusion_dim_mults": [1, 2], "diffusion_timesteps": 10, "sampling_steps": 5,
        "augment_batch_size": 16, "augment_train_steps": 40, "augment_log_interval": 20, "augment_save_interval": 20,
        "dynamics_hidden": 16, "labeler_hidden": 8, "labeler_max_epochs": 3, "augment_episodes": 4, "delta": 1e9,
        "generation_batch_size": 4, "use_tensorboard": False, "segment_horizon": 4, "augment_valid_fraction": 0.2,
        "use_cuda": False}


def tiny_updates(**changes):
    """`with` tokens of TINY (and `changes`) for src/main.py."""
    items = {**TINY, **changes}
    return [f"{k}={json.dumps(v)}" for k, v in items.items()] + [f"env_args.max_cycles={LIMIT}"]


def augment(tmp_path, alg, data, **changes):
    """run_augment in-process (errors raise as they are) with the tiny settings."""
    config = build_config(alg, "mpe_spread", {"local_results_path": str(tmp_path / "results"),
                                              "offline_dataset": str(data), "env_args": {"max_cycles": LIMIT},
                                              "seed": 3, **TINY, **changes})  # seed: run_main's
    th.set_num_threads(1)  # as src/main.py does (torch_threads)
    return run_augment(None, config, LOG)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A one-expert spread dataset labelled by --config=label_agent_quality with the oracle (labels/best_agent)."""
    tmp = tmp_path_factory.mktemp("source")
    path, _ = write_one_expert_spread(tmp / "src.h5", E=E, N=3)
    run_main(tmp, "label_agent_quality", "mpe_spread", f"offline_dataset={path}", f"env_args.max_cycles={LIMIT}",
             "label_segments=0.3", f"segment_horizon={TINY['segment_horizon']}")
    return path


def copy_of(src, tmp_path, name="src.h5"):
    os.makedirs(tmp_path, exist_ok=True)
    return shutil.copyfile(src, tmp_path / name)


@pytest.fixture(scope="module")
def codi_run(labelled, tmp_path_factory):
    """--config=codi through src/main.py (all stages) on a copy of the labelled source."""
    tmp = tmp_path_factory.mktemp("codi")
    src = copy_of(labelled, tmp)
    run_main(tmp / "results", "codi", "mpe_spread", f"offline_dataset={src}", *tiny_updates())
    info = json.load(open(os.path.join(sacred_dir(tmp / "results", "codi", "spread_N3"), "info.json")))
    return tmp, src, info


def arrays_of(path):
    ds = OfflineDataset.load(path)
    return {k: v for k, v in ds.arrays().items() if not k.startswith("labels/")}


def test_codi_end_to_end_generates_a_dataset_that_merges_and_trains_bc(codi_run):
    tmp, src, info = codi_run
    aug = info["augment"]
    gen = aug["generate"]["path"]
    assert aug["stages"] == ["labeler", "train", "generate"] and gen.startswith(aug["artifacts"])
    assert "/augment/codi/spread_N3/" in aug["artifacts"]
    # the source gained labels/codi_z_<labeler hash> [E, T+1, n]; its episodes are untouched
    source = OfflineDataset.load(src, expect_env=("mpe", spread_env_args()))
    label = aug["labeler"]["label"]
    assert label == "codi_z_" + aug["labeler"]["labeler_sha256"][:12]
    z = source.arrays()["labels/" + label]
    assert z.shape == (E, LIMIT + 1, 3)
    np.testing.assert_allclose(z[:, :LIMIT].sum(-1), 1.0, atol=1e-5)  # a distribution at every segment start
    assert (z[:, LIMIT] == 0).all()  # no segment starts at the last observation
    assert source.label_attrs(label)["labeler_sha256"] == aug["labeler"]["labeler_sha256"]
    assert set(aug["labeler"]["report"]) == {"vs_given", "vs_truth"}
    assert len(aug["labeler"]["report"]["vs_truth"]["confusion"]) == 3
    # the generated file: the source's env, generated quality, provenance
    ds = OfflineDataset.load(gen, expect_env=("mpe", spread_env_args()))
    assert len(ds) == 4 and ds.env_info == source.env_info
    assert set(ds.qualities.ravel()) == {"generated"} and ds.attrs["augmenter"] == "codi"
    assert json.loads(ds.attrs["generation"])["pass_rate"] == 1.0  # delta=1e9
    # artifacts and logged statistics
    meta = json.load(open(os.path.join(aug["artifacts"], "meta.json")))
    assert meta["train"]["steps"] == 40 and meta["env_info"] == source.env_info
    assert meta["generated"][0]["path"] == gen
    for name in ("diffusion.pt", "dynamics.pt", "normaliser.json", "scheduler_config.json"):
        assert os.path.exists(os.path.join(aug["artifacts"], "models", name))
    assert os.path.exists(os.path.join(aug["artifacts"], "labeler_report.md"))
    assert info["diffusion_loss_T"] == [20, 40] and len(info["real_pass_rate"]) == 2
    assert {"labeler_acc_truth", "inv_acc_valid", "probe_pass_rate", "probe_step_error", "gen_pass_rate"} <= set(info)
    assert info["probe_pass_rate"] == [1.0, 1.0]  # delta=1e9
    cout = open(os.path.join(sacred_dir(tmp / "results", "codi", "spread_N3"), "cout.txt")).read()
    assert "generation part 1/1: 4 episodes" in cout  # generation's own lines reach the run's log
    # the source and the generated file merge and train BC through src/main.py
    run_main(tmp / "bc", "bc", "mpe_spread", f"offline_dataset=['{src}', '{gen}']", "offline_steps=2",
             "offline_test_interval=2", "offline_log_interval=2", "offline_save_interval=2", "batch_size=4",
             "test_nepisode=1", f"env_args.max_cycles={LIMIT}", "use_tensorboard=False")
    bc = json.load(open(os.path.join(sacred_dir(tmp / "bc", "bc", "spread_N3"), "info.json")))
    assert bc["dataset"]["episodes"] == E + 4


@pytest.mark.parametrize("alg,labels,guidance", [("codi_no_comp", "distilled", "all_ones"),
                                                 ("codi_privileged", "privileged", "compose"),
                                                 ("madiff_like", "none", "return_only")])
def test_each_variant_runs(labelled, tmp_path, alg, labels, guidance):
    info = augment(tmp_path, alg, copy_of(labelled, tmp_path))
    assert os.path.basename(os.path.dirname(os.path.dirname(info["artifacts"]))) == alg
    assert (info["labeler"] is None) == (labels != "distilled")
    meta = json.load(open(os.path.join(info["artifacts"], "meta.json")))
    assert meta["labels"] == labels and meta["augmenter"] == alg
    gen = OfflineDataset.load(info["generate"]["path"])
    assert len(gen) == 4 and gen.attrs["augmenter"] == alg
    assert json.loads(gen.attrs["config"])["guidance"] == guidance


def test_stage_by_stage_equals_all(labelled, codi_run, tmp_path):
    _, _, info_all = codi_run
    src = copy_of(labelled, tmp_path)
    parts = {stage: augment(tmp_path, "codi", src, augment_stage=stage) for stage in ("labeler", "train", "generate")}
    assert parts["labeler"]["labeler"]["labeler_sha256"] == info_all["augment"]["labeler"]["labeler_sha256"]
    assert parts["train"]["train"]["model_hashes"] == info_all["augment"]["train"]["model_hashes"]
    a, b = arrays_of(parts["generate"]["generate"]["path"]), arrays_of(info_all["augment"]["generate"]["path"])
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # the labeler stage again keeps this folder's labeler and its labels (no refit under a trained checkpoint)
    label = parts["labeler"]["labeler"]["label"]
    z = OfflineDataset.load(src).label(label)
    again_labeler = augment(tmp_path, "codi", src, augment_stage="labeler")
    assert again_labeler["labeler"] == parts["labeler"]["labeler"]  # the stored summary (a refit's seconds differ)
    np.testing.assert_array_equal(OfflineDataset.load(src).label(label), z)
    # generating again with the same settings keeps the file; augment_checkpoint generates from the trained models
    again = augment(tmp_path, "codi", src, augment_stage="generate")
    assert again["generate"]["reused"] and again["generate"]["path"] == parts["generate"]["generate"]["path"]
    other = augment(tmp_path, "codi_no_comp", src, augment_checkpoint=parts["train"]["artifacts"],
                    augment_out=str(tmp_path / "no_comp.h5"))
    assert other["stages"] == ["generate"] and len(OfflineDataset.load(tmp_path / "no_comp.h5")) == 4
    # an augment_out path is not keyed by the settings: the same ones reuse it, others are refused by name
    same = augment(tmp_path, "codi_no_comp", src, augment_checkpoint=parts["train"]["artifacts"],
                   augment_out=str(tmp_path / "no_comp.h5"))
    assert same["generate"]["reused"]
    with pytest.raises(ConfigError, match=r"no_comp.h5 exists but was generated differently \(it differs in "
                                          r"\['sampling'\]\): choose another augment_out"):
        augment(tmp_path, "codi_no_comp", src, augment_checkpoint=parts["train"]["artifacts"],
                augment_out=str(tmp_path / "no_comp.h5"), guidance_weights=2.0)


def train_cut_at_step_27(tmp_path, src, monkeypatch, **changes):
    """madiff_like's training interrupted inside step 27 (KeyboardInterrupt); returns its artifact folder and the
    step of the checkpoint it left."""
    real_step = DynamicsModels.train_step
    calls = {"n": 0}

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 27:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(DynamicsModels, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        augment(tmp_path / "cut", "madiff_like", src, augment_stage="train", **changes)
    monkeypatch.setattr(DynamicsModels, "train_step", real_step)
    folder = glob.glob(str(tmp_path / "cut" / "results" / "augment" / "madiff_like" / "*" / "*"))[0]
    return folder, th.load(os.path.join(folder, "train", "checkpoint.pt"), weights_only=False)["step"]


def test_interrupted_training_resumes_exactly(labelled, tmp_path, monkeypatch):
    src = copy_of(labelled, tmp_path)
    whole = augment(tmp_path / "whole", "madiff_like", src, augment_stage="train")
    folder, saved_step = train_cut_at_step_27(tmp_path, src, monkeypatch)
    assert saved_step == 20  # the last checkpoint by augment_save_interval
    resumed = augment(tmp_path / "cut", "madiff_like", src, augment_stage="train")
    assert resumed["artifacts"] == folder and resumed["train"]["steps"] == 40
    assert resumed["train"]["model_hashes"] == whole["train"]["model_hashes"]  # byte-identical models


def test_a_checkpoint_is_also_written_by_wall_time_and_resumes_exactly(labelled, tmp_path, monkeypatch):
    """augment_save_minutes saves between augment_save_interval's steps (here: every step, as any time is overdue);
    the resume from such an off-interval step gives the same models, and the setting is not in the artifact id."""
    src = copy_of(labelled, tmp_path)
    whole = augment(tmp_path / "whole", "madiff_like", src, augment_stage="train", augment_save_minutes=0)
    _, saved_step = train_cut_at_step_27(tmp_path, src, monkeypatch, augment_save_interval=1000,
                                         augment_save_minutes=1e-9)
    assert saved_step == 26
    resumed = augment(tmp_path / "cut", "madiff_like", src, augment_stage="train")
    assert resumed["artifacts"].split(os.sep)[-1] == whole["artifacts"].split(os.sep)[-1]
    assert resumed["train"]["steps"] == 40 and resumed["train"]["model_hashes"] == whole["train"]["model_hashes"]


def test_presets_and_explicit_keys():
    from types import SimpleNamespace

    from augmenters.codi.settings import resolve
    paper = resolve(SimpleNamespace(**build_config("codi", "mpe_spread", {"augment_preset": "paper",
                                                                          "diffusion_dim": 64})))
    assert paper.model["dim"] == 64 and paper.model["dim_mults"] == [1, 4, 8] and paper.model["n_timesteps"] == 200
    assert paper.generation["sampling_steps"] == 15 and paper.train_steps == 1_000_000 and paper.batch_size == 64
    # a fixed default seed (not Sacred's random draw, which would key a new artifact folder on every rerun)
    for alg in ("codi", "codi_no_comp", "codi_privileged", "madiff_like"):
        plain = resolve(SimpleNamespace(**build_config(alg, "mpe_spread", {})))
        assert build_config(alg, "mpe_spread", {})["seed"] == 0 and plain.seed == 0
    cpu = resolve(SimpleNamespace(**build_config("codi", "mpe_spread", {"guidance_weights": [1.0, 0, 0],
                                                                        "target_rtg": -105, "delta": 0.03})))
    assert cpu.model["dim"] == 64 and cpu.generation["sampling_steps"] == 25 and cpu.train_steps == 10_000
    assert cpu.model["lr"] == 1e-3 and paper.model["lr"] == 2e-4
    ddpm = resolve(SimpleNamespace(**build_config("codi", "mpe_spread", {"sampler": "ddpm"})))
    assert ddpm.generation["sampling_steps"] == 50  # ancestral sampling over every step unless asked for fewer
    assert cpu.generation["guidance_weights"] == [1.0, 0.0, 0.0] and cpu.generation["target_rtg"] == -105.0
    # label_keep_one enters the settings (and so the artifact id) only when on: earlier runs keep their folders
    assert "label_keep_one" not in cpu.model
    keep = resolve(SimpleNamespace(**build_config("codi", "mpe_spread", {"label_keep_one": 0.25})))
    assert keep.model["label_keep_one"] == 0.25
    madiff = resolve(SimpleNamespace(**build_config("madiff_like", "mpe_spread", {"label_keep_one": 0.25})))
    assert "label_keep_one" not in madiff.model  # no labels to keep: the same madiff_like run and artifacts
    # max_view_gap likewise enters the generation settings (and so the output's hash) only when on
    assert "max_view_gap" not in cpu.generation
    gap = resolve(SimpleNamespace(**build_config("codi", "mpe_spread", {"max_view_gap": 0.05})))
    assert gap.generation["max_view_gap"] == 0.05 and gap.generation_hash() != cpu.generation_hash()
    assert "project_views" not in cpu.generation  # and project_views
    projected = resolve(SimpleNamespace(**build_config("codi", "mpe_spread", {"project_views": True})))
    assert projected.generation["project_views"] is True and projected.generation_hash() != cpu.generation_hash()
    assert "snap_obs" not in cpu.generation  # and snap_obs
    snapped = resolve(SimpleNamespace(**build_config("codi", "lbf_8x8_2p_2f_coop", {"snap_obs": True})))
    plain = resolve(SimpleNamespace(**build_config("codi", "lbf_8x8_2p_2f_coop", {})))
    assert snapped.generation["snap_obs"] is True and snapped.generation_hash() != plain.generation_hash()
    for bad, match in (({"delta": "often"}, "delta must be auto"), ({"augment_preset": "gpu"}, "augment_preset"),
                       ({"label_keep_one": 1.5}, r"'label_keep_one' must be a probability in \[0, 1\]"),
                       ({"label_keep_one": -0.1}, r"'label_keep_one' must be a probability in \[0, 1\]"),
                       ({"sampling_steps": 60}, "more than diffusion_timesteps=50"),
                       ({"augment_stage": "sample"}, "'augment_stage' must be one of all, labeler"),  # build_config
                       ({"max_view_gap": -0.1}, "max_view_gap must be null"),
                       ({"max_view_gap": float("inf")}, "max_view_gap must be null"),
                       ({"max_view_gap": "small"}, "max_view_gap must be a number"),
                       ({"project_views": 1}, "project_views must be True or False"),
                       ({"snap_obs": 1}, "snap_obs must be True or False"),
                       ({"augment_save_minutes": -1}, "augment_save_minutes' must be >= 0")):
        with pytest.raises(ValueError, match=match):
            resolve(SimpleNamespace(**build_config("codi", "mpe_spread", bad)))


# ----- bad inputs (issue 15, section 11) -----
def test_a_dataset_without_the_labels_names_the_label_command(labelled, tmp_path):
    path, _ = write_one_expert_spread(tmp_path / "raw.h5", E=8)
    with pytest.raises(ValueError, match=r"labels/best_agent.*--config=label_agent_quality --env-config=mpe_spread "
                                         rf"with offline_dataset={path}"):
        augment(tmp_path, "codi", path)
    with pytest.raises(ValueError, match="judge segments of 4 steps, this run's segment_horizon is 5: set "
                                         "segment_horizon=4, or label again"):
        augment(tmp_path, "codi", labelled, segment_horizon=5)
    with pytest.raises(ConfigError, match=r"has no fitted labeler yet \(its labeler stage has not run\): run the "
                                          r"labeler stage first"):
        augment(tmp_path, "codi", path, augment_stage="train")
    assert not glob.glob(str(tmp_path / "results" / "augment" / "*" / "*" / "*" / "models"))


def test_every_augmenter_declares_the_labels_it_writes():
    """The label run reads `writes_labels` of every registered augmenter: each inherits the declaration."""
    import augmenters
    from augmenters.base import Augmenter

    for name, cls in augmenters.REGISTRY.items():
        assert issubclass(cls, Augmenter) and isinstance(cls.writes_labels, tuple), name


def test_distilled_labels_are_named_by_their_labeler_and_never_replace_others(labelled, tmp_path):
    """labels/codi_z_<labeler hash>: two runs with other labelers (seeds) on one source keep both label sets, and the
    first run's train stage still reads its own (one codi_z slot per source let the second replace the first's, whose
    train stage then failed); a label of that name that another tool wrote is refused with the rename that keeps it,
    never replaced; a codi_z of an older label run stays untouched (the label run refuses codi_z and codi_z_*)."""
    import edit_labels

    import augmenters

    assert {n for cls in augmenters.REGISTRY.values() for n in cls.writes_labels} == {"codi_z", "codi_z_*"}
    src = copy_of(labelled, tmp_path)
    assert edit_labels.main([str(src), "--rename-label", "best_agent=codi_z"]) == 0  # as an older label run named it
    theirs = OfflineDataset.load(src).label("codi_z").copy()
    first = augment(tmp_path / "a", "codi", src, augment_stage="labeler", augment_label_name="codi_z")["labeler"]
    second = augment(tmp_path / "b", "codi", src, augment_stage="labeler", augment_label_name="codi_z",
                     seed=4)["labeler"]
    assert first["labeler_sha256"] != second["labeler_sha256"] and first["label"] != second["label"]
    ds = OfflineDataset.load(src)
    assert {"codi_z", first["label"], second["label"]} <= set(ds.label_names)
    np.testing.assert_array_equal(ds.label("codi_z"), theirs)
    assert ds.label_attrs(first["label"])["labeler_sha256"] == first["labeler_sha256"]
    trained = augment(tmp_path / "a", "codi", src, augment_stage="train", augment_label_name="codi_z")
    assert trained["train"]["model_hashes"]["labeler"] == first["labeler_sha256"]
    # a fresh copy of the source whose label of that name another tool wrote: refused, kept byte for byte
    forged = copy_of(labelled, tmp_path, "forged.h5")
    assert edit_labels.main([str(forged), "--rename-label", f"best_agent={first['label']}"]) == 0
    before = OfflineDataset.load(forged).label(first["label"]).copy()
    with pytest.raises(DatasetError, match=rf"has labels/{first['label']} made by a labeling run \(task "
                                           r"agent_quality, .*never replaces labels it did not make") as e:
        augment(tmp_path / "a", "codi", forged, augment_stage="labeler", augment_label_name=first["label"])
    assert f"python scripts/edit_labels.py {forged} --rename-label {first['label']}=<new name>" in str(e.value)
    np.testing.assert_array_equal(OfflineDataset.load(forged).label(first["label"]), before)


def test_codi_privileged_refuses_data_that_is_not_one_expert(tmp_path):
    path, _ = write_one_expert_spread(tmp_path / "rand.h5", E=8, qualities=np.full((8, 3), "random"))
    with pytest.raises(ValueError, match=r"qualities \['random'\] and episodes by number of expert agents \{0: 8\}"
                                         r".*--config=codi"):
        augment(tmp_path, "codi_privileged", path)
    two, _ = write_one_expert_spread(tmp_path / "two.h5", E=8, qualities=np.tile(["expert", "expert", "random"],
                                                                                   (8, 1)))
    with pytest.raises(ValueError, match=r"\{2: 8\}"):
        augment(tmp_path, "codi_privileged", two)


def test_env_and_shape_mismatches_are_refused(labelled, codi_run, tmp_path):
    with pytest.raises(DatasetError, match=r"env_args\['N'\] is 3, expected 4"):
        augment(tmp_path, "madiff_like", labelled, env_args={"max_cycles": LIMIT, "N": 4})
    _, _, info = codi_run
    with pytest.raises(ValueError, match="trained as codi .*use the checkpoint's --config=codi"):
        augment(tmp_path, "madiff_like", labelled, augment_checkpoint=info["augment"]["artifacts"])
    fake = tmp_path / "fake"
    shutil.copytree(info["augment"]["artifacts"], fake)
    meta = json.load(open(fake / "meta.json"))
    meta["env_info"]["obs_shape"] += 1
    json.dump(meta, open(fake / "meta.json", "w"))
    with pytest.raises(ValueError, match="was trained on shapes .*use a dataset of the checkpoint's env"):
        augment(tmp_path, "codi", labelled, augment_checkpoint=str(fake))
    # the env arguments must match, except the seed that collected the episodes (offline datasets compare alike)
    for name, change, refused in (("reseeded", {"seed": 12345}, False), ("longer", {"max_cycles": LIMIT + 1}, True)):
        other = tmp_path / name
        shutil.copytree(info["augment"]["artifacts"], other)
        meta = json.load(open(other / "meta.json"))
        meta["env_args"].update(change)
        json.dump(meta, open(other / "meta.json", "w"))
        if refused:
            with pytest.raises(ValueError, match="was trained on env mpe with env_args .*use a dataset and "
                                                 "--env-config of the checkpoint's env"):
                augment(tmp_path, "codi", labelled, augment_checkpoint=str(other))
        else:
            assert augment(tmp_path, "codi", labelled, augment_checkpoint=str(other))["generate"]["path"]


def test_a_second_run_in_the_same_folder_is_refused(labelled, codi_run, tmp_path):
    folder = codi_run[2]["augment"]["artifacts"]
    lock = FolderLock.try_acquire(folder)
    try:
        with pytest.raises(RuntimeError, match="another process is running in .*rerun to continue"):
            augment(tmp_path, "codi", labelled, augment_checkpoint=folder)
    finally:
        lock.release()


def test_a_horizon_longer_than_the_episodes_is_refused(labelled, tmp_path):
    with pytest.raises(ValueError, match=f"segment_horizon=11 is longer than the episode limit {LIMIT}"):
        augment(tmp_path, "madiff_like", labelled, segment_horizon=11)


def test_a_nan_loss_stops_and_keeps_the_last_checkpoint(labelled, tmp_path, monkeypatch):
    real_loss = SegmentDiffusion.loss

    def nan_after_25(self, batch):
        loss = real_loss(self, batch)
        return loss * float("nan") if self.steps >= 25 else loss

    monkeypatch.setattr(SegmentDiffusion, "loss", nan_after_25)
    with pytest.raises(FloatingPointError, match=r"training stopped at step 25: .*checkpoint .*checkpoint.pt "
                                                 r"\(step 20\) is kept"):
        augment(tmp_path, "madiff_like", labelled, augment_stage="train")
    ckpt = glob.glob(str(tmp_path / "results" / "augment" / "madiff_like" / "*" / "*" / "train" / "checkpoint.pt"))
    assert th.load(ckpt[0], weights_only=False)["step"] == 20


def test_a_delta_nothing_passes_stops_with_the_rates_and_writes_no_file(labelled, codi_run, tmp_path):
    _, _, info = codi_run
    out = tmp_path / "none.h5"
    with pytest.raises(GenerationError, match=r"pass rate 0/\d+ = 0.00%.*No dataset was written"):
        augment(tmp_path, "codi", labelled, augment_checkpoint=info["augment"]["artifacts"], delta=1e-30,
                max_attempts=8, augment_out=str(out))
    assert not out.exists()


def test_max_view_gap_filters_generation_through_the_config(labelled, codi_run, tmp_path):
    _, _, info = codi_run
    with pytest.raises(GenerationError, match=r"\d+ passed δ and the action check but failed max_view_gap=0"):
        augment(tmp_path, "codi", labelled, augment_checkpoint=info["augment"]["artifacts"], max_view_gap=0.0,
                max_attempts=8, augment_out=str(tmp_path / "none.h5"))  # tiny models' agents never agree exactly
    assert not (tmp_path / "none.h5").exists()
    wide = augment(tmp_path, "codi", labelled, augment_checkpoint=info["augment"]["artifacts"], max_view_gap=1e9)
    g = wide["generate"]
    assert g["max_view_gap"] == 1e9 and g["counters"]["rejected_view_gap"] == 0 and g["pass_rate"] == 1.0
    assert g["path"] != info["augment"]["generate"]["path"]  # another setting, another file; the first is kept
    assert info["augment"]["generate"]["max_view_gap"] is None


def test_project_views_generates_views_of_one_world_through_the_config(labelled, codi_run, tmp_path):
    """The tiny models' agents disagree about the world (previous test); with project_views every generated
    observation is one a single world explains, and the file says how it was sampled."""
    from envs import make_env

    _, _, info = codi_run
    spread = make_env("mpe", **spread_env_args(3))
    plain = arrays_of(info["augment"]["generate"]["path"])
    got = augment(tmp_path, "codi", labelled, augment_checkpoint=info["augment"]["artifacts"], project_views=True)
    g = got["generate"]
    assert g["path"] != info["augment"]["generate"]["path"] and g["pass_rate"] > 0
    projected = arrays_of(g["path"])
    assert len(projected["obs"]) == len(plain["obs"])
    filled = projected["filled"][..., 0].astype(bool)
    assert spread.view_gap_from_obs(plain["obs"][plain["filled"][..., 0].astype(bool)]).max() > 0.05
    assert spread.view_gap_from_obs(projected["obs"][filled]).max() < 1e-4
    ds = OfflineDataset.load(g["path"], lazy=True)
    try:
        assert json.loads(ds.attrs["sampling"])["project_views"] is True
    finally:
        ds.close()


@pytest.mark.parametrize("env_config, changes, match", [
    ("climbing", {"segment_horizon": 2}, "MatrixGame .*hooks.*(MPE|use one of those envs)"),
    # MPE world has the obs hooks, not view_gap_from_obs
    ("mpe_world", {"max_view_gap": 0.1}, "max_view_gap needs the env hook view_gap_from_obs.*max_view_gap: null"),
    ("mpe_world", {"project_views": True}, "project_views needs the env hook view_projection.*project_views: False"),
    ("mpe_spread", {"snap_obs": True}, "snap_obs needs the env hook snap_obs.*full-sight LBF has it.*snap_obs: "
                                       "False")])
def test_an_env_without_the_hooks_it_needs_is_refused_before_training(tmp_path, env_config, changes, match):
    path, _ = write_random_dataset(str(tmp_path / "data.h5"), env_config, n_episodes=4)
    config = build_config("madiff_like", env_config, {"local_results_path": str(tmp_path / "results"),
                                                      "offline_dataset": path, **TINY, **changes})
    with pytest.raises(ValueError, match=match):
        run_augment(None, config, LOG)
    assert not (tmp_path / "results" / "augment").exists()


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU")
def test_codi_on_cuda_trains_generates_and_resumes_on_the_cpu(labelled, tmp_path):
    src = copy_of(labelled, tmp_path)
    info = augment(tmp_path, "codi", src, use_cuda=True)
    assert OfflineDataset.load(info["generate"]["path"]).env_info["n_agents"] == 3
    # the CUDA-trained models generate on the CPU too
    cpu = augment(tmp_path, "codi", src, augment_checkpoint=info["artifacts"], augment_out=str(tmp_path / "cpu.h5"))
    assert len(OfflineDataset.load(cpu["generate"]["path"])) == 4


# ----- settings and inputs that are refused, warned about or recorded (the tester's report on CODI) -----
def main_fails(tmp_path, alg, capfd, *updates, match):
    """src/main.py with `updates` exits 2 with one 'config error' line matching `match`, no traceback, and leaves
    no run folder and no artifact folder."""
    capfd.readouterr()
    run_main(tmp_path, alg, "mpe_spread", *updates, f"env_args.max_cycles={LIMIT}", "use_tensorboard=False",
             expect=2)
    err = capfd.readouterr().err
    assert "Traceback" not in err and re.search(match, err), err[-2000:]
    assert not glob.glob(str(tmp_path / "sacred" / "*" / "*" / "[0-9]*"))
    assert not glob.glob(str(tmp_path / "augment" / "*"))  # not even an empty one
    return err


def test_ema_decay_outside_0_1_is_refused_before_the_run(labelled, tmp_path, capfd):
    for value in (1.5, 1.0, 0.0, -0.1):
        with pytest.raises(ConfigError, match=r"'ema_decay' must be in \(0, 1\)"):
            build_config("codi", "mpe_spread", {"ema_decay": value})
    main_fails(tmp_path, "codi", capfd, f"offline_dataset={labelled}", "ema_decay=1.5",
               match=r"config error: config key 'ema_decay' must be in \(0, 1\)")


def test_nonfinite_ema_weights_stop_training_and_keep_the_last_checkpoint(labelled, tmp_path, monkeypatch):
    """The EMA (sampling) weights are checked after each EMA update: an EMA that diverges (here a decay far above 1,
    which the config refuses, forced into the model) stops training with the last good checkpoint kept."""
    real_init = SegmentDiffusion.__init__

    def diverging(self, *a, **kw):
        real_init(self, *a, **{**kw, "ema_decay": 1e6, "ema_start": 20, "ema_every": 1})

    monkeypatch.setattr(SegmentDiffusion, "__init__", diverging)
    with pytest.raises(FloatingPointError, match=r"training stopped at step 2\d: the EMA weights \(the ones sampling "
                                                 r"uses\) hold NaN or infinite values.*checkpoint.pt \(step 20\) is "
                                                 r"kept"):
        augment(tmp_path, "madiff_like", labelled, augment_stage="train")
    ckpt = glob.glob(str(tmp_path / "results" / "augment" / "madiff_like" / "*" / "*" / "train" / "checkpoint.pt"))
    state = th.load(ckpt[0], weights_only=False)
    assert state["step"] == 20 and all(th.isfinite(v).all() for v in state["diffusion"]["ema"].values())


def test_models_with_nonfinite_ema_weights_are_refused_before_generating(labelled, codi_run, tmp_path):
    from augmenters.codi.augmenter import state_hash

    folder = tmp_path / "nan"
    shutil.copytree(codi_run[2]["augment"]["artifacts"], folder)
    state = th.load(folder / "models" / "diffusion.pt", weights_only=False)
    state["ema"] = {k: th.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["ema"].items()}
    th.save(state, folder / "models" / "diffusion.pt")
    meta = json.load(open(folder / "meta.json"))
    meta["train"]["model_hashes"]["diffusion.pt"] = state_hash(state)
    json.dump(meta, open(folder / "meta.json", "w"))
    with pytest.raises(ConfigError, match=r"hold NaN or infinite EMA weights .*cannot generate"):
        augment(tmp_path, "codi", labelled, augment_checkpoint=str(folder), augment_out=str(tmp_path / "x.h5"))
    assert not (tmp_path / "x.h5").exists()


def test_generated_returns_outside_the_source_returns_are_counted_and_warned(labelled, codi_run, tmp_path,
                                                                              monkeypatch, caplog):
    """Σr̂ is f_rwd's: where it pays more than the env ever did on the source, the episodes are counted
    (generation.counters return_above_source / return_below_source, in the file's attrs and info.json) and named in
    a warning; r̂ itself is not clipped."""
    returns = np.asarray(OfflineDataset.load(labelled).returns, dtype=np.float64)
    folder = codi_run[2]["augment"]["artifacts"]
    # the tiny models as they are: the counters agree with the file's returns against the source's
    plain = augment(tmp_path, "codi", labelled, augment_checkpoint=folder, augment_out=str(tmp_path / "plain.h5"))
    g = plain["generate"]
    stored = np.asarray(OfflineDataset.load(g["path"]).returns, dtype=np.float64)
    assert g["source_return_range"] == [returns.min(), returns.max()]
    assert g["counters"]["return_above_source"] == int((stored > returns.max() + 1e-6).sum())
    assert g["counters"]["return_below_source"] == int((stored < returns.min() - 1e-6).sum())
    # a reward model that overpays: every episode above the source's best return, said and recorded
    monkeypatch.setattr(DynamicsModels, "rewards", lambda self, x, a: th.full(x.shape[:1] + (x.shape[1] - 1,), 100.0))
    with caplog.at_level(logging.WARNING):
        rich = augment(tmp_path, "codi", labelled, augment_checkpoint=folder, augment_out=str(tmp_path / "rich.h5"))
    g = rich["generate"]
    assert g["counters"]["return_above_source"] == 4 and g["counters"]["return_below_source"] == 0
    assert g["return_min"] > returns.max()
    attrs = json.loads(OfflineDataset.load(g["path"]).attrs["generation"])
    assert attrs["counters"]["return_above_source"] == 4
    assert "4 of 4 generated episodes have a return (Σr̂, the reward model's) outside the source's returns" in \
        caplog.text


def test_fewer_train_steps_than_the_folder_holds_are_refused_naming_the_folder(codi_run, capfd):
    """The artifact folder is keyed by every training setting but the step count (a longer run continues it): a
    rerun asking for fewer steps is refused (it silently generated from the longer-trained models), and generating
    from a folder whose training has not reached augment_train_steps is refused too; the folder is untouched."""
    tmp, src, info = codi_run
    folder = info["augment"]["artifacts"]
    before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(folder, "**"), recursive=True)}
    for stage in ("all", "train", "generate"):
        with pytest.raises(ConfigError, match=rf"{folder} holds models trained for 40 steps, more than this run's "
                                              rf"augment_train_steps=20 .*give augment_train_steps=40 .*"
                                              rf"local_results_path=<another folder>"):
            augment(tmp, "codi", src, augment_stage=stage, augment_train_steps=20)
    with pytest.raises(ConfigError, match=r"holds models trained for 40 of this run's augment_train_steps=60 steps: "
                                          r"run the train stage to finish them"):
        augment(tmp, "codi", src, augment_stage="generate", augment_train_steps=60)
    err = main_fails(tmp / "cli", "codi", capfd, f"offline_dataset={src}", *tiny_updates(augment_train_steps=20),
                     f"local_results_path={tmp / 'results'}", match="more than this run's augment_train_steps=20")
    assert "local_results_path=<another folder>" in err
    assert {p: os.path.getmtime(p) for p in glob.glob(os.path.join(folder, "**"), recursive=True)} == before


@pytest.mark.parametrize("stage", ["train", "labeler"])
def test_augment_checkpoint_only_generates(codi_run, tmp_path, capfd, stage):
    """augment_checkpoint names another run's trained folder: fitting or training in it is refused before the run."""
    tmp, src, info = codi_run
    main_fails(tmp_path, "codi", capfd, f"offline_dataset={src}", f"augment_checkpoint={info['augment']['artifacts']}",
               f"augment_stage={stage}", match=rf"augment_checkpoint=.* generates from trained models; augment_stage="
                                               rf"{stage} would fit or train inside that folder")


def test_generating_from_a_checkpoint_builds_the_models_from_its_settings(labelled, codi_run, tmp_path, caplog):
    """augment_checkpoint: the models are built from its meta.json (no need to repeat diffusion_dim, ...); settings
    given otherwise are named in a warning, a preset key left null is not; another source of the env is a warning."""
    folder = codi_run[2]["augment"]["artifacts"]
    with caplog.at_level(logging.WARNING):
        got = augment(tmp_path, "codi_no_comp", labelled, augment_checkpoint=folder, diffusion_dim=16,
                      diffusion_timesteps=20, segment_horizon=5, dynamics_hidden=32,
                      augment_out=str(tmp_path / "given.h5"))
    assert len(OfflineDataset.load(got["generate"]["path"])) == 4 and got["models"]["steps"] == 40
    for said in ("diffusion_dim=8 (this run's 16 is not used)", "diffusion_timesteps=10 (this run's 20 is not used)",
                 "segment_horizon=4 (this run's 5 is not used)", "dynamics_hidden=16 (this run's 32 is not used)"):
        assert said in caplog.text
    assert "was trained on" not in caplog.text  # the same source
    caplog.clear()
    other, _ = write_one_expert_spread(tmp_path / "other.h5", E=E, N=3, seed=5)
    with caplog.at_level(logging.WARNING):
        got = augment(tmp_path, "codi_no_comp", other, augment_checkpoint=folder, diffusion_dim=None,
                      diffusion_timesteps=None, dynamics_hidden=None, augment_out=str(tmp_path / "preset.h5"))
    assert len(OfflineDataset.load(got["generate"]["path"])) == 4
    assert "diffusion_dim" not in caplog.text  # left to the preset: not the user's
    trained_on = json.load(open(os.path.join(folder, "meta.json")))["source"]["path"]
    assert trained_on == os.path.abspath(codi_run[1])  # generating from it with other data left that as it was
    assert f"was trained on {trained_on}, not on {other}" in caplog.text
    with pytest.raises(ConfigError, match=r"sampling_steps=25 is more than the models' diffusion_timesteps=10"):
        augment(tmp_path, "codi_no_comp", labelled, augment_checkpoint=folder, sampling_steps=None,
                diffusion_timesteps=None)


def test_input_mistakes_are_one_line_errors_before_any_work(labelled, tmp_path, capfd):
    """Each ends with exit status 2, one 'config error' line naming the key or the fix, no run folder and no
    artifact folder; the label run's mistakes too."""
    raw, _ = write_one_expert_spread(tmp_path / "raw.h5", E=8)
    rand, _ = write_one_expert_spread(tmp_path / "rand.h5", E=8, qualities=np.full((8, 3), "random"))
    src = copy_of(labelled, tmp_path)
    for alg, updates, match in (
            ("codi", ["segment_horizon=60"], "segment_horizon=60 is longer than the episode limit 10"),
            ("codi", ["guidance_weights=[1.0,1.0]"], "guidance_weights has 2 entries for 3 agents"),
            ("codi", ["guidance_weights=[1.0,-1.0,1.0]"], "guidance_weights must be a finite number >= 0"),
            ("codi", ["guidance_weights=[1.0,nan,1.0]"], "guidance_weights must be a finite number >= 0"),
            ("codi", ["augment_checkpoint=/nonexistent/folder"], "augment_checkpoint=/nonexistent/folder does not "
                                                                 "exist"),
            ("codi", ["label_drop=1.5"], r"'label_drop' must be a probability in \[0, 1\]"),
            ("codi", ["p_uncond=-0.5"], r"'p_uncond' must be a probability in \[0, 1\]"),
            ("codi", ["delta=0"], r"delta must be auto .* or a finite number > 0 \(0 passes no generated segment\)"),
            ("codi", [f"augment_out={src}"], "augment_out=.* is the source dataset"),
            ("codi", [f"augment_out={raw}"], "augment_out=.* exists and is not a dataset that CODI generated"),
            ("label_agent_quality", ["label_segments=1.5"], r"'label_segments' must be a fraction"),
            ("label_agent_quality", ["segment_horizon=11", "label_name=fresh"], r"segment_horizon=11 must be in 2..10"),
            ("label_agent_quality", ["labeler=noisy_oracle", "segment_horizon=4"],
             "already has 'best_agent' .* made with other settings")):
        err = main_fails(tmp_path, alg, capfd, f"offline_dataset={src}", *updates, match=match)
        assert "delete" not in err
    main_fails(tmp_path, "codi", capfd, f"offline_dataset={raw}", match=r"labels/best_agent, which .* does not have")
    run_main(tmp_path / "label", "label_agent_quality", "mpe_spread", f"offline_dataset={src}",
             f"env_args.max_cycles={LIMIT}", "label_segments=2", "label_name=two", "segment_horizon=4")
    main_fails(tmp_path, "codi", capfd, f"offline_dataset={src}", *tiny_updates(augment_label_name="two"),
               match=r"labeler's 2 labelled segments are too few .* rerun --config=label_agent_quality with a larger "
                     r"label_segments")
    main_fails(tmp_path, "codi_privileged", capfd, f"offline_dataset={rand}", match="exactly one agent of quality")
    main_fails(tmp_path, "codi", capfd, f"offline_dataset={src}", "augment_stage=train",
               match=r"has no fitted labeler yet")  # said so, not "another labeler (None)"


def test_guidance_weights_broadcast_one_entry_and_target_far_outside_the_source_warns(labelled, codi_run, tmp_path,
                                                                                    caplog):
    from types import SimpleNamespace

    from augmenters.codi.settings import resolve

    one = resolve(SimpleNamespace(**build_config("codi", "mpe_spread", {"guidance_weights": [1.0]})))
    assert one.generation["guidance_weights"] == [1.0]  # one entry = a scalar: every agent
    with caplog.at_level(logging.WARNING):
        got = augment(tmp_path, "codi", labelled, augment_checkpoint=codi_run[2]["augment"]["artifacts"],
                      guidance_weights=[1.0], target_rtg=1e9, augment_out=str(tmp_path / "far.h5"))
    assert len(OfflineDataset.load(got["generate"]["path"])) == 4
    assert "target_rtg=1000000000.0 is 1e+09, outside the source's episode returns" in caplog.text


def test_ctrl_c_stops_training_at_a_step_with_a_checkpoint_and_the_rerun_resumes_there(labelled, tmp_path):
    src = copy_of(labelled, tmp_path)
    rc, out = ctrl_c_run(tmp_path / "results", "madiff_like", "mpe_spread", f"offline_dataset={src}",
                         *tiny_updates(augment_train_steps=100000, augment_save_interval=100000),
                         ready=lambda console: "train step 20/100000" in console)
    assert rc == 130, out[-3000:]
    found = re.search(r"Interrupted at training step (\d+) of 100000: checkpoint (\S+); rerun the same command to "
                      r"resume from step (\d+)", out)
    assert found and found.group(1) == found.group(3), out[-3000:]
    step = int(found.group(1))
    assert th.load(found.group(2), weights_only=False)["step"] == step >= 20  # saved there, not at an interval
    info = augment(tmp_path, "madiff_like", src, augment_stage="train", augment_train_steps=step + 3)
    assert info["train"]["steps"] == step + 3


def test_a_failed_run_leaves_no_empty_artifact_folder_and_scheduler_config_is_sorted(labelled, codi_run, tmp_path,
                                                                                   monkeypatch):
    from augmenters.codi.labeler import AgentQualityLabeler

    def broken(self, *a, **kw):
        raise RuntimeError("labeler failed")

    monkeypatch.setattr(AgentQualityLabeler, "fit", broken)
    with pytest.raises(RuntimeError, match="labeler failed"):
        augment(tmp_path, "codi", copy_of(labelled, tmp_path))
    assert not (tmp_path / "results" / "augment").exists()  # nor the folders above it that it made
    config = json.load(open(os.path.join(codi_run[2]["augment"]["artifacts"], "models", "scheduler_config.json")))
    assert list(config) == sorted(config)


def test_a_run_that_loses_the_lock_leaves_the_holders_new_folder_alone(labelled, tmp_path, monkeypatch):
    """Review finding: a run saw no folder, another made and locked it (still empty while its labeler fits), the
    first then failed to lock and its cleanup removed the holder's folder. The cleanup is registered only with
    the lock held."""
    src = copy_of(labelled, tmp_path)
    held = []
    real = FolderLock.try_acquire.__func__

    def other_run_wins(cls, folder):
        held.append(real(cls, folder))  # another run: makes the folder and locks it, in the gap
        return real(cls, folder)  # then ours: refused

    monkeypatch.setattr(FolderLock, "try_acquire", classmethod(other_run_wins))
    try:
        with pytest.raises(RuntimeError, match="another process is running in"):
            augment(tmp_path, "codi", src)
        assert held[0] is not None and os.path.isdir(held[0].folder)
    finally:
        for lock in held:
            if lock is not None:
                lock.release()


def test_a_lost_labeler_is_not_refitted_under_trained_models(labelled, tmp_path):
    """Review finding: a labeler.pt that could not be loaded was silently refitted, changing the labels under the
    folder's trained models; now refused, naming the way out."""
    import edit_labels

    src = copy_of(labelled, tmp_path)
    fitted = augment(tmp_path, "codi", src, augment_stage="labeler")
    folder, label = fitted["artifacts"], fitted["labeler"]["label"]
    augment(tmp_path, "codi", src, augment_stage="train")
    os.remove(os.path.join(folder, "labeler.pt"))
    assert edit_labels.main([str(src), "--remove-label", label]) == 0
    with pytest.raises(ConfigError, match="labeler.pt is missing, damaged or not the labeler .* were trained on that "
                                          "labeler's labels: restore labeler.pt"):
        augment(tmp_path, "codi", src, augment_stage="labeler")


def test_a_ctrl_c_once_training_is_done_stops_before_generation(labelled, tmp_path, monkeypatch, caplog):
    """Review finding: a Ctrl-C in the final save was logged as "stopping" and then generation ran anyway."""
    import signal

    from augmenters.codi.augmenter import CodiAugmenter

    real = CodiAugmenter._save_models

    def save_then_ctrl_c(self, *a, **kw):
        out = real(self, *a, **kw)
        signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(CodiAugmenter, "_save_models", save_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        augment(tmp_path, "madiff_like", copy_of(labelled, tmp_path))
    assert "stopping before generation: rerun the same command to generate" in caplog.text
    assert not glob.glob(str(tmp_path / "results" / "augment" / "*" / "*" / "*" / "generated_*.h5"))


def test_a_noisy_oracle_below_chance_is_warned_about(labelled, tmp_path, capfd):
    """agent_quality with 3 agents: a uniform guess is right 1/3 of the time; a noisy oracle below that is allowed
    (an adversarial-label ablation) but said."""
    src = copy_of(labelled, tmp_path)
    capfd.readouterr()
    run_main(tmp_path, "label_agent_quality", "mpe_spread", f"offline_dataset={src}", f"env_args.max_cycles={LIMIT}",
             "labeler=noisy_oracle", "oracle_accuracy=0.3", "label_name=adversarial")
    assert "oracle_accuracy=0.3 is below chance for agent_quality (0.333, a uniform guess)" in capfd.readouterr().err
