"""Loading and merging the YAML configs; pymarl/epymarl key aliases; unknown-key and range errors.

Merge order (pymarl's): default.yaml <- envs/<env>.yaml <- algs/<alg>.yaml <- `with` overrides.
`--config=<name>` names an algorithm (config/algs/) or a run-mode config (config/runs/: collect, qllm_generate, ...);
a name is looked up in both folders and must be in one of them only.
"""
import difflib
import functools
import os
import re
from collections.abc import Mapping
from copy import deepcopy

import yaml

from utils.paths import CONFIG_DIR

# Other codebases' spellings of our keys (pymarl/pymarl2 -> epymarl). Both are accepted
# everywhere (YAML files and `with`); the config that is stored uses the right-hand name.
KEY_ALIASES = {
    "rnn_hidden_dim": "hidden_dim",
    "target_update_interval": "target_update_interval_or_tau",
}

# Keys under which any sub-key is accepted: their contents are checked by the env/module that uses them.
OPEN_KEYS = ("env_args", "collect_datasets", "quality_fractions")
# Keys that take one path or a list of paths (offline_dataset=[orig.h5, generated.h5] merges them in order).
PATH_LIST_KEYS = ("offline_dataset",)


# Keys with a fixed set of values (learners read on_nonfinite from here too).
CHOICES = {"on_nonfinite": ("stop", "skip_batch"),
           # MisoDICE / INDD (config/algs/misodice.yaml)
           "schedule": ("sequential", "joint"), "nu_loss": ("exp", "logsumexp"), "disc_mix": ("logits", "probs"),
           "disc_gp_inputs": ("obs", "all"), "time_limit_end": ("bootstrap", "terminal"),
           "s0_source": ("init_batch", "data_batch"), "omapl_rank_by": ("sum", "mean"),
           "weight_pooling": ("transition", "episode"),
           # labeling (config/runs/label_*.yaml, lca_label.yaml) and CODI (config/runs/codi.yaml)
           "noise_mode": ("bernoulli", "exact"), "augment_stage": ("all", "labeler", "train", "generate"),
           "augment_preset": ("cpu", "paper"), "delta_per": ("step", "segment"),
           # core RL settings (config/default.yaml, the alg configs); the modules that read them use these lists
           "optimizer": ("adam", "rmsprop"), "epsilon_decay": ("linear", "exp"),
           "reward_scalarisation": ("sum", "mean"), "agent_output_type": ("q", "pi_logits"),
           # LCA (config/default.yaml's lca: block; dotted: a key of a nested block). Checked before anything runs,
           # so a misspelt mode is not found only after the rankings were paid for; shapers/lca and labeling use these
           "lca.pair_source": ("random_states", "rollouts", "mixed", "auto"), "lca.answer_mode": ("cot", "direct"),
           "lca.oracle_ties": ("worse", "drop"), "lca.keystep_policy": ("random", "oracle"),
           "lca.groups": ("auto", "shared", "per_agent"), "lca.normalise": ("pair_std", "none"),
           "lca.mode": ("add", "replace"), "lca.terminal_potential": ("keep", "zero")}

LR_MAX = 1e30  # above it, Adam/RMSprop's step (lr over a bias correction) overflows float32: a raw RuntimeError
LR_RANGE = "> 0 and <= 1e30 (a larger step overflows the optimisers' float32 arithmetic)"
# key -> (integer only, test, allowed range in words, null allowed). Checked on the merged config, before anything runs.
RANGES = {
    # <= 1: Adam / RMSprop move each weight by about lr per step; a larger step diverges (lr=1e38 overflowed float32
    # in the optimiser)
    # an upper bound only where the arithmetic breaks: lr=1e30 is a legitimate way to provoke (and test) a NaN
    "lr": (False, lambda v: 0 < v <= LR_MAX, LR_RANGE, False),
    "critic_lr": (False, lambda v: 0 < v <= LR_MAX, LR_RANGE + " (or null = lr)", True),
    "gamma": (False, lambda v: 0 < v <= 1, "in (0, 1]", False),
    "batch_size": (True, lambda v: v >= 1, "an integer >= 1", False),
    "batch_size_run": (True, lambda v: v >= 1, "an integer >= 1", False),
    "buffer_size": (True, lambda v: v >= 1, "an integer >= 1", False),
    "hidden_dim": (True, lambda v: v >= 1, "an integer >= 1", False),
    "mixing_embed_dim": (True, lambda v: v >= 1, "an integer >= 1 (the mixer's width)", False),
    # the mixers' hypernetworks (modules/mixers/qmix.py builds 1 or 2 layers; qplex's ParallelMLP 1 or more)
    "hypernet_layers": (True, lambda v: v in (1, 2), "1 or 2 (qmix's hypernetworks: 1 = linear, 2 = one hidden "
                                                     "layer of hypernet_embed)", False),
    "hypernet_embed": (True, lambda v: v >= 1, "an integer >= 1 (the hypernetworks' width)", False),
    "adv_hypernet_layers": (True, lambda v: v >= 1, "an integer >= 1 (qplex's lambda networks)", False),
    "adv_hypernet_embed": (True, lambda v: v >= 1, "an integer >= 1 (qplex's lambda networks' width)", False),
    "num_kernel": (True, lambda v: v >= 1, "an integer >= 1 (qplex's attention kernels)", False),
    # optimizer=rmsprop (learners/common.py): alpha is the decay of the squared-gradient average, eps its floor
    "optim_alpha": (False, lambda v: 0 < v < 1, "in (0, 1) (RMSprop's smoothing constant)", False),
    "optim_eps": (False, lambda v: v > 0, "> 0 (RMSprop divides by sqrt(average) + optim_eps)", False),
    "critic_hidden_dim": (True, lambda v: v >= 1, "an integer >= 1 (or null = hidden_dim)", True),
    "t_max": (True, lambda v: v >= 0, "an integer >= 0", False),
    "test_nepisode": (True, lambda v: v >= 1, "an integer >= 1", False),
    "seed": (True, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2**32) (or null = Sacred draws one)", True),
    "grad_norm_clip": (False, lambda v: v > 0, "> 0 (the largest gradient norm an update may apply)", False),
    "target_update_interval_or_tau": (False, lambda v: v > 0, "> 0 (<= 1: soft-update tau; > 1: a hard copy every "
                                                              "that many learner updates)", False),
    "test_interval": (True, lambda v: v >= 1, "an integer >= 1 (env steps between evaluations)", False),
    "save_model_interval": (True, lambda v: v >= 1, "an integer >= 1 (env steps between checkpoints; "
                                                    "save_model=False saves none)", False),
    "log_interval": (True, lambda v: v >= 0, "an integer >= 0 (0 = after every rollout)", False),
    "runner_log_interval": (True, lambda v: v >= 0, "an integer >= 0 (0 = after every rollout)", False),
    "learner_log_interval": (True, lambda v: v >= 0, "an integer >= 0 (0 = after every update)", False),
    "updates_per_rollout": (True, lambda v: v >= 1, "an integer >= 1", False),
    "n_workers": (True, lambda v: v >= 0, "an integer >= 0 (0 = CPU cores - 1)", False),
    "load_step": (True, lambda v: v >= 0, "an integer >= 0 (0 = the latest checkpoint)", False),
    "epsilon_anneal_time": (True, lambda v: v >= 1, "an integer >= 1 (env steps from epsilon_start to "
                                                    "epsilon_finish; for a constant epsilon set both equal)", False),
    # PPO family (config/algs/ippo.yaml, mappo, ia2c, maa2c)
    "epochs": (True, lambda v: v >= 1, "an integer >= 1 (passes over each batch)", False),
    "num_mini_batches": (True, lambda v: v >= 1, "an integer >= 1 (1 = the full batch)", False),
    "eps_clip": (False, lambda v: v >= 0, ">= 0", False),
    "critic_coef": (False, lambda v: v >= 0, ">= 0", False),
    "entropy_coef": (False, lambda v: v >= 0, ">= 0", False),
    "epsilon_start": (False, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    "epsilon_finish": (False, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    "evaluation_epsilon": (False, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    "collect_epsilon": (False, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    "td_lambda": (False, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    "gae_lambda": (False, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    "tfcaf_timeout_s": (False, lambda v: v > 0, "> 0", False),
    "tfcaf_memory_mb": (True, lambda v: v >= 64, "an integer >= 64", False),
    "misodice_alpha": (False, lambda v: v >= 0, ">= 0", False),
    "exp_clip": (False, lambda v: v > 0, "> 0 (the exponent clamp of the DICE weights: <= 0 caps every weight at "
                                         "exp(exp_clip) <= 1, flattening the weights above it)", False),
    # offline baselines (config/algs/bc.yaml, bc_beta, omar, omiga)
    "bc_beta": (False, lambda v: 0 <= v <= 1, "in [0, 1] (the weight of the expert-data term)", False),
    "cql_alpha": (False, lambda v: v >= 0, ">= 0 (a negative CQL weight pushes up the Q of unseen actions)", False),
    "omar_coe": (False, lambda v: 0 <= v <= 1, "in [0, 1] (the actor loss mixes omar_coe * CE and "
                                                "(1 - omar_coe) * -Q; outside, one of them changes sign)", False),
    "omiga_alpha": (False, lambda v: v > 0, "> 0 (OMIGA's and O-MAPL's V loss and BC weights divide by it)", False),
    "ratio_clip": (False, lambda v: v > 0, "> 0", False),
    "weight_max": (False, lambda v: v > 0, "> 0 (or null = no clip)", True),
    "disc_steps": (True, lambda v: v >= 0, "an integer >= 0", False),
    "nu_steps": (True, lambda v: v >= 0, "an integer >= 0", False),
    "gp_samples": (True, lambda v: v >= 1, "an integer >= 1", False),
    "s0_batch_size": (True, lambda v: v >= 1, "an integer >= 1", False),
    # preference learners (O-MAPL, MARL-SL) and the labeling run mode
    "preference_batch_size": (True, lambda v: v >= 1, "an integer >= 1", False),
    "topk_expert": (True, lambda v: v >= 1, "an integer >= 1 (and at most the dataset's episodes, checked when it "
                                            "loads)", False),
    "omapl_reward_reg": (False, lambda v: v >= 0, ">= 0 (a negative weight rewards large recovered rewards)", False),
    "marl_sl_hidden_dim": (True, lambda v: v >= 1, "an integer >= 1 (the reward model's width)", False),
    "max_unlabeled_fraction": (False, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    "n_pairs": (True, lambda v: v >= 1, "an integer >= 1", False),
    "oracle_accuracy": (False, lambda v: 0 <= v <= 1, "in [0, 1]", False),
    # agent-quality labeling (CODI): a count of segments, or a fraction of all segment starts
    "label_segments": (False, lambda v: v > 0 and (v <= 1 or v == int(v)),
                       "a fraction of all segment starts (a float in (0, 1]) or a whole count (an int >= 1)", False),
    # >= 2: CODI (the labels' only user) fits, generates and stitches H-1 >= 1 transitions per segment
    "segment_horizon": (True, lambda v: v >= 2, "an integer >= 2 (CODI's segments hold H-1 transitions)", False),
    # CODI's diffusion model (config/runs/codi.yaml; null = the augment_preset's value)
    "ema_decay": (False, lambda v: 0 < v < 1, "in (0, 1) (or null = the preset's 0.995): the EMA weight kept per "
                                              "update; >= 1 makes the sampling weights diverge", True),
    "label_drop": (False, lambda v: 0 <= v <= 1, "a probability in [0, 1]", False),
    "p_uncond": (False, lambda v: 0 <= v <= 1, "a probability in [0, 1]", False),
    "label_keep_one": (False, lambda v: 0 <= v <= 1, "a probability in [0, 1] (0 = the paper)", False),
    "augment_save_minutes": (False, lambda v: v >= 0, ">= 0 (0 = checkpoints by augment_save_interval only)", False),
    "augment_episodes": (True, lambda v: v >= 1, "an integer >= 1 (or null = as many as the source)", True),
    # CODI's labeler (null = labeler.preset(augment_preset)'s value)
    "labeler_hidden": (True, lambda v: v >= 1, "an integer >= 1 (or null = the preset's GRU width)", True),
    "labeler_max_epochs": (True, lambda v: v >= 1, "an integer >= 1 (or null = the preset's)", True),
    "labeler_max_steps": (True, lambda v: v >= 1, "an integer >= 1 (or null = the preset's)", True),
    "labeler_lr": (False, lambda v: 0 < v <= LR_MAX, LR_RANGE + " (or null = the preset's)", True),
    "labeler_batch_size": (True, lambda v: v >= 1, "an integer >= 1 (or null = the preset's)", True),
    # offline training (config/default.yaml)
    "offline_steps": (True, lambda v: v >= 1, "an integer >= 1", False),
    "offline_test_interval": (True, lambda v: v >= 1, "an integer >= 1 (gradient steps between evaluations)", False),
    "offline_save_interval": (True, lambda v: v >= 1, "an integer >= 1 (gradient steps between checkpoints; "
                                                      "save_model=False saves none)", False),
    "offline_top_fraction": (False, lambda v: 0 < v <= 1, "in (0, 1] (1 = every episode, 0.5 = 50%BC)", False),
    "offline_valid_fraction": (False, lambda v: 0 <= v < 1, "in [0, 1) (0 = no held-out episodes)", False),
    # LCA (config/default.yaml's lca: block): pairs, potential training and shaping
    "lca.n_pairs": (True, lambda v: v >= 1, "an integer >= 1 (or null = the paper's count for the env)", True),
    "lca.pair_seed": (True, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2**32)", False),
    "lca.queries": (True, lambda v: v >= 1, "an integer >= 1 (answers per item)", False),
    "lca.keystep_max_steps": (True, lambda v: v >= 1, "an integer >= 1", False),
    "lca.hidden_dim": (True, lambda v: v >= 1, "an integer >= 1", False),
    "lca.lr": (False, lambda v: 0 < v <= LR_MAX, LR_RANGE, False),
    "lca.epochs": (True, lambda v: v >= 1, "an integer >= 1", False),
    "lca.batch_size": (True, lambda v: v >= 1, "an integer >= 1", False),
    "lca.score_l2": (False, lambda v: v >= 0, ">= 0 (0 = off)", False),
    "lca.valid_fraction": (False, lambda v: 0 <= v < 1, "in [0, 1) (0 = no held-out pairs: every epoch runs and "
                                                        "the last weights are kept)", False),
    "lca.patience": (True, lambda v: v >= 1, "an integer >= 1", False),
    "lca.check_episodes": (True, lambda v: v >= 0, "an integer >= 0 (0 = skip the oracle-episode check)", False),
    "lca.coef": (False, lambda v: v >= 0, ">= 0 (0 = no shaping; a negative weight would reward the moves the "
                                          "rankings call unhelpful)", False),
    # LLM budgets of the labeling runs
    "max_requests": (True, lambda v: v >= 0, "an integer >= 0 (0 = cached answers only; null = no limit)", True),
    "max_cost_usd": (False, lambda v: v >= 0, ">= 0 (null = no limit)", True),
    # env arguments every env that takes them reads the same way (gymma, lbf, gfootball): a float or a word would
    # run int(time_limit) steps or fail with a raw int() error inside the env
    "env_args.time_limit": (True, lambda v: v >= 1, "an integer >= 1 (steps per episode)", False),
}

# Keys that take text only (null allowed): another value fails with a raw error inside the module that reads it.
STRING_KEYS = {"env_args.key": "the env id, a gymnasium id or module:EnvId"}

# Keys whose default is a whole number but which take any number (a float is not a type error there).
NUMBER_KEYS = ("grad_norm_clip", "target_update_interval_or_tau", "tfcaf_timeout_s", "augment_save_minutes")
# Keys that take a number or a word (CODI's augment configs: delta auto | 0.03, target_rtg -105 | quantile:0.9,
# guidance_weights 1.2 | [1.2, 0, 0]): no type check here; the run mode that reads them checks their values.
MIXED_KEYS = ("delta", "target_rtg", "guidance_weights")


# (low key, high key, what they are): both set (not null) must have low < high.
ORDERED_PAIRS = (("reference_return_low", "reference_return_high",
                  "the normalised score (R - low) / (high - low) needs high > low (equal divides by zero; inverted "
                  "turns the score around); set both, or leave both null for no normalised score"),)


# Keys naming a folder or a run: an empty string would write results to odd places.
NONEMPTY_KEYS = {"name": "it names the run's results folders; give a name, or leave name= out for the --config name",
                 "local_results_path": "it is the results folder; give a folder, or leave it out for results/"}


# EPyMARL's names (keys, --config names, learner names) that this codebase does not have: what each was and what to
# use here. Unknown-key, unknown-config and unknown-registry-name errors say this instead of a closest-key guess.
_AC_ALGS = "the actor-critic algs here (ia2c, ippo, maa2c, mappo and their _ns forms: learners/ppo_learner.py)"
EPYMARL_ONLY = {
    "q_nstep": f"EPyMARL's n-step critic targets; {_AC_ALGS} use GAE: gae_lambda sets the horizon (0 = one-step TD, "
               f"1 = Monte Carlo returns), and use_gae=False gives one-step TD advantages",
    "standardise_returns": f"{_AC_ALGS} normalise the critic's targets with use_value_norm=True (the critic "
                           f"predicts returns normalised by running statistics); standardise_rewards is as in EPyMARL",
    "use_critic_rnn": "the critics here (critic_type ac_critic, cv_critic and their _ns forms) are feed-forward; "
                      "there is no recurrent critic",
    "target_update_interval_or_tau": f"{_AC_ALGS} keep no target critic: each batch the critic is fit to GAE returns "
                                     f"of its own current values; the key sets the target networks of the Q-learning "
                                     f"algs (qmix, vdn, iql, qplex, qatten) and the offline ones",
    "actor_critic_learner": "EPyMARL's A2C learner; here ia2c and maa2c are learner=ppo_learner with epochs=1 and "
                            "num_mini_batches=1 (one full-batch update: the ratio is 1, so the A2C gradient) and GAE "
                            "advantages: use --config=ia2c or --config=maa2c",
    "coma": "COMA is not implemented here; for a centralised critic use --config=maa2c or --config=mappo",
    "coma_learner": "COMA is not implemented here; for a centralised critic use --config=maa2c or --config=mappo",
    "maddpg": "MADDPG is not implemented here; for a centralised critic use --config=maa2c or --config=mappo",
    "maddpg_learner": "MADDPG is not implemented here; for a centralised critic use --config=maa2c or --config=mappo",
    "pac": "PAC is not implemented here; for a centralised critic use --config=maa2c or --config=mappo",
    "ia2c_ns": "ia2c is ippo with one epoch here: use --config=ippo_ns with epochs=1 name=ia2c_ns",
    "maa2c_ns": "maa2c is mappo with one epoch here: use --config=mappo_ns with epochs=1 name=maa2c_ns",
}


def epymarl_note(name, what):
    """The EPYMARL_ONLY explanation of `name` (`what`: how it was given, e.g. "config key 'q_nstep'"), or None."""
    note = EPYMARL_ONLY.get(name)
    return f"{what} (EPyMARL) is not available here: {note}" if note else None


class ConfigError(ValueError):
    """A config problem the user can fix; the message says what and how."""

    label = "config error"  # the start of the one line that reports it (a subclass may name its kind)


def canonical_key(key):
    return KEY_ALIASES.get(key, key)


def canonicalize(d):
    """Rename alias keys (top level only; aliases are top-level keys)."""
    out = {}
    for k, v in d.items():
        ck = canonical_key(k)
        if ck in out:
            raise ConfigError(f"'{ck}' is set twice (once through its alias); keep one spelling")
        out[ck] = v
    return out


def recursive_update(base, update):
    """Return a deep copy of `base` updated with `update`; nested mappings merge key by key."""
    out = deepcopy(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = recursive_update(out[k], v)
        else:
            out[k] = deepcopy(v)
    return out


# --config=<name> is looked up in these folders (algorithms, run-mode configs)
RUN_CONFIG_DIRS = ("algs", "runs")


def available(subdir):
    folder = os.path.join(CONFIG_DIR, subdir)
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []


def _unknown_name(name, subdirs):
    note = epymarl_note(name, f"--config={name}")
    if note:
        return ConfigError(note)
    valid = sorted({n for d in subdirs for n in available(d)})
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    where = " or ".join(f"config/{d}/" for d in subdirs)
    return ConfigError(f"no config '{name}' in {where}.{hint} Valid names: {', '.join(valid)}")


def _shown(path):
    """`path` relative to the repository root when it lies inside it (config/envs/lbf.yaml)."""
    rel = os.path.relpath(path, os.path.dirname(CONFIG_DIR))
    return path if rel.startswith("..") else rel


# libyaml's loader where PyYAML has it (7x faster: every run and test reads three or more files); the pure-Python one
# reports a broken file, with the line it quotes and a caret under the error
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{_shown(path)} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          f"save it as UTF-8") from None
    try:  # libyaml takes tabs where PyYAML refuses them: such a file is PyYAML's to read (or refuse) as before
        data = yaml.load(text, Loader=FAST_LOADER if "\t" not in text else yaml.SafeLoader) or {}
    except yaml.YAMLError:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{_shown(path)} is not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_shown(path)} must hold a mapping of keys to values")
    return canonicalize(data)


def load_yaml(subdir, name):
    """Load config/<subdir>/<name>.yaml; an unknown name lists the valid ones."""
    path = os.path.join(CONFIG_DIR, subdir, f"{name}.yaml") if subdir else os.path.join(CONFIG_DIR, f"{name}.yaml")
    if not os.path.isfile(path):
        raise _unknown_name(name, (subdir,))
    return read_yaml(path)


def run_config_path(name):
    """The file of `--config=<name>`: config/algs/<name>.yaml or config/runs/<name>.yaml (not both)."""
    found = [os.path.join(CONFIG_DIR, d, f"{name}.yaml") for d in RUN_CONFIG_DIRS]
    found = [p for p in found if os.path.isfile(p)]
    if not found:
        raise _unknown_name(name, RUN_CONFIG_DIRS)
    if len(found) > 1:
        files = " and ".join(os.path.relpath(p, os.path.dirname(CONFIG_DIR)) for p in found)
        raise ConfigError(f"--config={name} is ambiguous: both {files} exist; rename or remove one")
    return found[0]


def load_alg(name, _seen=()):
    """The `--config=<name>` settings (config/algs/ or config/runs/); `inherit: <other name>` starts from that
    config's settings, in either folder (a variant lists only what it changes, e.g. bc50 = bc with
    offline_top_fraction 0.5); `inherit: [a, b]` merges a, then b over it (lca_ippo = ippo's algorithm + lca_label's
    labeling keys, each written once)."""
    if name in _seen:
        raise ConfigError(f"config inherit cycle {' -> '.join((*_seen, name))}")
    path = run_config_path(name)
    data = read_yaml(path)
    check_file_keys(data, path)
    bases = data.pop("inherit", None) or []
    merged = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = recursive_update(merged, load_alg(base, (*_seen, name)))
    return recursive_update(merged, data)


def suggest(key, valid):
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return f" Closest valid keys: {', '.join(close)}." if close else ""


def check_known_keys(update, known, where="", origin=""):
    """Raise ConfigError for any key of `update` (nested, dotted) that `known` lacks (`origin`: the file, if any)."""
    for k, v in update.items():
        path = f"{where}{k}"
        if k not in known:
            note = epymarl_note(k, f"{origin}config key '{path}'")
            if note:
                raise ConfigError(note)
            where_new = "config/default.yaml" if origin else "config/default.yaml, the env config or the alg config"
            raise ConfigError(
                f"{origin}unknown config key '{path}'.{suggest(k, list(known))} "
                f"Every key needs a default in {where_new}; add it there if it is new."
            )
        if k in OPEN_KEYS and not where:
            continue
        if isinstance(v, Mapping) and isinstance(known.get(k), Mapping):
            check_known_keys(v, known[k], where=f"{path}.", origin=origin)


SHIPPED_LIST = "SHIPPED.txt"
# how to rewrite config/SHIPPED.txt after adding (or removing) a shipped config file, from the repository root
SHIPPED_REGENERATE = "git ls-files -- 'config/*.yaml' | cut -d/ -f2- > config/SHIPPED.txt"


def _shipped_yaml(config_dir):
    """The shipped YAML files under `config_dir` (absolute paths), as its SHIPPED.txt lists them (one path per line,
    relative to `config_dir`), or None when there is no list (a config folder of one's own: every file there counts
    as shipped). A committed list, not git: a download without git must not take the user's own files as shipped,
    and a user's file stays theirs (checked) when committed to a fork; an edited shipped file stays shipped."""
    try:
        with open(os.path.join(config_dir, SHIPPED_LIST), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    return {os.path.realpath(os.path.join(config_dir, line.strip())) for line in lines if line.strip()}


@functools.lru_cache(maxsize=4)
def shipped_keys(config_dir):
    """Every key a shipped config declares: config/default.yaml's and those of the algs/, envs/ and runs/ files that
    config/SHIPPED.txt lists (nested blocks as mappings). A key of the user's own YAML file must be one of these (a key
    only in that file is almost always a typo: hiden_dim next to hidden_dim)."""
    shipped = _shipped_yaml(config_dir)
    known = {}
    for sub in ("", *RUN_CONFIG_DIRS, "envs"):
        folder = os.path.join(config_dir, sub)
        names = ["default.yaml"] if not sub else sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in names:
            path = os.path.join(folder, name)
            if not name.endswith(".yaml") or (shipped is not None and os.path.realpath(path) not in shipped):
                continue
            try:
                known = recursive_update(known, read_yaml(path))
            except ConfigError:  # a broken file is reported when it is loaded
                continue
    known.pop("inherit", None)
    return known


def check_file_keys(data, path):
    """Raise ConfigError naming `path` for a key of its settings `data` that no shipped config declares but that is
    close to one that does (hiden_dim next to hidden_dim: a typo). A key unlike any is the file's own new key (a new
    learner's, docs/adding-a-learner.md) and is declared by it."""
    known = shipped_keys(CONFIG_DIR)
    typos = {k: v for k, v in data.items() if k != "inherit" and k not in known
             and difflib.get_close_matches(k, list(known), n=1, cutoff=0.8)}
    typos.update({k: v for k, v in data.items() if k in known and k not in OPEN_KEYS and isinstance(v, Mapping)})
    check_known_keys(typos, known, origin=f"{_shown(path)}: ")


def key_name(key):
    """The key as the user may have spelled it: 'hidden_dim (pymarl: rnn_hidden_dim)'."""
    aliases = [a for a, k in KEY_ALIASES.items() if k == key]
    return f"'{key}'" + (f" (pymarl: {', '.join(aliases)})" if aliases else "")


_TYPE_WORDS = {bool: "True or False", int: "an integer", float: "a number", str: "a string", list: "a list",
               Mapping: "a mapping (key: value, ...)"}


# YAML's spellings of null: a config file reads them as None, and so does a `with` update of a key that allows null
YAML_NULLS = ("null", "Null", "NULL", "~")


# as PyYAML (YAML 1.1) reads them in the config files: yes/no/on/off too (`env_args.normalize_reward=no` was the
# text 'no', which the env took as true)
YAML_BOOLS = {w: value for words, value in ((("true", "yes", "on"), True), (("false", "no", "off"), False))
              for word in words for w in (word, word.capitalize(), word.upper())}


def yaml_scalar(value):
    """A command-line value as YAML reads it where Sacred does not (true/false/null/~ -> True/False/None); other
    values unchanged. Sacred parses Python literals only, so `env_args.normalize_reward=false` came as the text."""
    if isinstance(value, str):
        if value.strip() in YAML_NULLS:
            return None
        return YAML_BOOLS.get(value.strip(), value)
    return value


def _kind(key, default):
    """The type a value of `key` must have, judged from its default; None: anything goes."""
    if default is None or key in MIXED_KEYS:
        return None
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return float if key in NUMBER_KEYS else int
    for kind in (float, str, Mapping):
        if isinstance(default, kind):
            return kind
    if isinstance(default, (list, tuple)):
        return list
    return None


def _coerce(kind, value):
    """`value` as a `kind` where the conversion is unambiguous (2e6 -> 2000000, 'true' -> True, 'a,b' -> ['a', 'b']);
    raises TypeError where it is not."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip() in YAML_BOOLS:
            return YAML_BOOLS[value.strip()]
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif kind is str:
        if isinstance(value, str) or value is None:  # null: the usual "off" for a name (mixer=None)
            return value
    elif kind is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):  # `with collect_only=expert` or collect_only=expert,poor
            items = [v.strip().strip("'\"") for v in value.strip().strip("[]").split(",")]
            return [v for v in items if v]
    elif kind is Mapping:
        if isinstance(value, Mapping):
            return value
    raise TypeError


def check_types(update, reference, where="", origin=""):
    """Return `update` with every value converted to the type of its default in `reference` (the config it updates);
    raise ConfigError naming the key, the expected type, the default and the value where a value does not fit.
    A key whose default is null takes anything; an int where a float is expected is fine."""
    out = {}
    for k, v in update.items():
        path = f"{where}{k}"
        default = reference.get(k) if isinstance(reference, Mapping) else None
        kind = _kind(k, default)
        if kind is None or (k in OPEN_KEYS and not where and isinstance(v, Mapping)):
            out[k] = None if default is None and isinstance(v, str) and v.strip() in YAML_NULLS else v
            continue
        if k in PATH_LIST_KEYS and not where and isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v):
            out[k] = list(v)
            continue
        nullable = path in RANGES and RANGES[path][3]
        if isinstance(v, str) and v.strip() in YAML_NULLS and (nullable or kind is str):
            v = None  # `with weight_max=null`: Sacred passes YAML's null as text; the config files read it as None
        if v is None and nullable:
            out[k] = v
            continue
        try:
            value = _coerce(kind, v)
        except TypeError:
            hint = ""
            if kind is str and isinstance(v, (int, float)) and not isinstance(v, bool):
                hint = f" (to give it as text, quote it: '{path}=\"{v}\"')"
            elif kind is bool and v in (0, 1):
                hint = f" (write {path}={bool(v)})"
            name = key_name(k).replace(f"'{k}'", path) if not where else path
            shown = "" if kind is Mapping else f" (default {default!r})"
            message = f"{origin}config key {name} must be {_TYPE_WORDS[kind]}{shown}, got {v!r}{hint}"
            raise ConfigError(message) from None
        if kind is Mapping and k not in OPEN_KEYS:
            value = check_types(value, default, where=f"{path}.", origin=origin)
        out[k] = value
    return out


def lookup(config, key):
    """(found, value) of `key` in `config`; a dotted key (lca.mode) names a key of a nested block."""
    node = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_values(config):
    """Raise ConfigError naming the key, the value and the allowed values for the first value out of range."""
    for key, choices in CHOICES.items():
        found, value = lookup(config, key)
        if found and value not in choices:
            raise ConfigError(f"config key {key_name(key)} must be one of {', '.join(choices)}; got {value!r}")
    for key, (integer, test, allowed, nullable) in RANGES.items():
        found, value = lookup(config, key)
        if not found or (nullable and value is None):
            continue
        number = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not number or not test(value):
            raise ConfigError(f"config key {key_name(key)} must be {allowed}; got {value!r}")
    for low_key, high_key, what in ORDERED_PAIRS:
        low, high = config.get(low_key), config.get(high_key)
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and not low < high:
            raise ConfigError(f"config keys {low_key}={low!r} and {high_key}={high!r}: {what}")
    for key, what in STRING_KEYS.items():
        found, value = lookup(config, key)
        if found and value is not None and not isinstance(value, str):
            raise ConfigError(f"config key {key} must be a string, {what}; got {value!r}")
    name = config.get("name")
    bad_name = isinstance(name, str) and name.strip() and (
        not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith(".") or ".." in name)
    if bad_name:
        raise ConfigError(f"config key 'name' names the run's folders under local_results_path (a separator or '..' "
                          f"would write them elsewhere, a space breaks shell recipes): got {name!r}; use letters, "
                          f"digits, '_', '-' and '.', not first and not '..' (label= takes any text: it names no "
                          f"folder)")
    for key, what in NONEMPTY_KEYS.items():
        if key in config and config[key] is None:  # `with name=null`: read as None, as a config file would
            raise ConfigError(f"config key '{key}' must not be null: {what}")
        if isinstance(config.get(key), str) and not config[key].strip():
            raise ConfigError(f"config key '{key}' must not be empty: {what}")


def test_episodes(config):
    """The test episodes an evaluation runs: test_nepisode rounded down to whole rounds of batch_size_run envs (at least
    one round). src/main.py records this value in the run's config (and says so when it differs from the one given)."""
    per_round = config["batch_size_run"]
    return max(1, config["test_nepisode"] // per_round) * per_round


def build_config(alg, env, overrides=None):
    """default <- env <- alg (config/algs/ or config/runs/) <- overrides, with aliases resolved, unknown keys
    rejected, and every value of the env and alg configs and the overrides checked against the type of the value it
    replaces (check_types)."""
    config = load_yaml("", "default")
    # The env and alg files' keys are checked against every shipped config's (check_file_keys: a new option is
    # declared in config/default.yaml); overrides against this run's merged config.
    env_part = load_yaml("envs", env)
    check_file_keys(env_part, os.path.join(CONFIG_DIR, "envs", f"{env}.yaml"))
    for part, origin in ((env_part, f"config/envs/{env}.yaml: "), (load_alg(alg), f"--config={alg}: ")):
        config = recursive_update(config, check_types(part, config, origin=origin))
    if overrides:
        overrides = canonicalize(overrides)
        check_known_keys(overrides, config)
        config = recursive_update(config, check_types(overrides, config))
    check_values(config)
    config["env_config"] = env  # internal (not settable): which env config this run uses, e.g. for mixer qllm
    return config
