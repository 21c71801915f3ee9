"""Training LCA potentials from a rankings file, and their artifact folder.

    settings = TrainSettings.from_args(args)                       # the lca.* training keys
    result = train_potentials(rankings, settings)                  # models, encoder spec, metrics, scales
    folder, meta, reused = train_or_reuse(path, settings, results_dir)   # trains once, reuses after
    loaded = load_artifact(folder, env=..., env_args=..., n_agents=..., obs_shape=..., identity_dims=...)

Artifact: results/potentials/<env label>/<id>/{potential_<group>.pt, meta.json}; id = a short hash of the rankings
file's SHA-256 and the training settings, so the same command reuses it. meta.json holds the rankings hash, the env
and its args, n_agents, the encoder spec (potential.encoder_spec), the model shape, the settings, the metrics, the
normalisation and the SHA-256 of each .pt; `potential_sha256` (potential_hash) names the whole potential (weights,
normalisation, inputs) in checkpoints. The folder is written whole (utils.files.atomic_path) and checked when loaded:
another env, env args, agent count or encoder spec, a .pt whose SHA-256 differs from meta.json ("tampered") and
non-finite weights are refused.

Decisions:
- Each group's model trains on its own rows with its own Adam, early stopping and best-weights copy; rows without
  any vote (all queries unanswered) carry no label and are skipped (counted).
- The held-out rows (lca.valid_fraction, at least one when there are two rows or more) are drawn per group with
  lca.pair_seed; with none held out, training runs all epochs and keeps the last weights.
- Seeding: lca.pair_seed seeds the split, each model's initial weights and its batch order (torch generators of
  their own: the global RNG is untouched), so training is bit-reproducible on the CPU.
- Agreement: the sign of delta = sigma(o') - sigma(o) against the votes (p > 0.5 helps, p < 0.5 does not; p = 0.5
  ties are left out; delta = 0 counts as disagreeing) and against the env's oracle (better/worse rows; equal left out).
- lca.score_l2 adds score_l2 * mean(sigma(o)^2 + sigma(o')^2) / 2: BT only fixes differences, this pins the level.
- lca.normalise=pair_std divides each group's potential by the std of its delta over its training rows (stored as
  `scale` in meta.json, applied by the shaper), so lca.coef means the same across envs and rankers; none keeps 1.
- env args are compared without the run's own arguments (seed, common_reward, reward_scalarisation): they do not
  change the observations. Any other difference is refused (the potentials were trained on that env's states).
"""
import json
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch as th

from envs import make_env
from envs.multiagentenv import RUN_ARGS
from shapers.lca.oracle_check import describe as describe_check
from shapers.lca.oracle_check import oracle_episode_check
from shapers.lca.potential import Potential, bt_loss, encoder_spec, file_name, group_members
from shapers.lca.rankings import Rankings, check_complete, rankings_hash, read_rankings
from utils.config import CHOICES, ConfigError
from utils.files import atomic_path, clean_stale_temps, sha256_bytes, sha256_file, write_json_atomic
from utils.paths import env_label, repo_relative

META = "meta.json"
warn_log = logging.getLogger("pymarl.lca")  # shown with the run's own messages
FORMAT = "lca_potential/1"
NORMALISE = CHOICES["lca.normalise"]  # pair_std | none


@dataclass(frozen=True)
class TrainSettings:
    groups: str = "auto"
    hidden_dim: int = 64
    lr: float = 1e-2
    epochs: int = 200
    batch_size: int = 64
    score_l2: float = 0.0
    valid_fraction: float = 0.1
    patience: int = 20
    normalise: str = "pair_std"
    seed: int = 0

    @classmethod
    def from_args(cls, args):
        lca = args.lca
        return cls(groups=lca["groups"], hidden_dim=int(lca["hidden_dim"]), lr=float(lca["lr"]),
                   epochs=int(lca["epochs"]), batch_size=int(lca["batch_size"]), score_l2=float(lca["score_l2"]),
                   valid_fraction=float(lca["valid_fraction"]), patience=int(lca["patience"]),
                   normalise=lca["normalise"], seed=int(lca["pair_seed"]))

    def check(self):
        """The config checks these before the run (utils.config CHOICES / RANGES); settings made in code are checked
        here the same way (ConfigError: one line, exit status 2)."""
        if self.normalise not in NORMALISE:
            raise ConfigError(f"lca.normalise must be one of {list(NORMALISE)}, got {self.normalise!r}")
        if not 0 <= self.valid_fraction < 1:
            raise ConfigError(f"lca.valid_fraction must lie in [0, 1), got {self.valid_fraction}")
        for key in ("hidden_dim", "epochs", "batch_size", "patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"lca.{key} must be at least 1, got {getattr(self, key)}")
        if not self.lr > 0 or self.score_l2 < 0:
            raise ConfigError(f"lca.lr must be > 0 and lca.score_l2 >= 0, got {self.lr} and {self.score_l2}")

    def identity(self):
        return asdict(self)


@dataclass
class TrainResult:
    models: dict      # group name -> Potential (CPU, eval mode)
    spec: dict        # potential.encoder_spec
    metrics: dict     # {"groups": {group name: metrics}, "pooled": agreements and counts over all groups}
    scales: dict      # group name -> divisor of the potential (pair_std) or 1.0


def agreement(delta, p, oracle):
    """(vote agreement, oracle agreement) of score differences `delta` [P] with soft labels `p` and oracle labels
    (1 better, 0 worse, 0.5 equal, NaN unknown); None where no row counts."""
    votes = p != 0.5
    oracle_rows = (oracle == 0) | (oracle == 1)
    vote = float((np.sign(delta[votes]) == np.sign(p[votes] - 0.5)).mean()) if votes.any() else None
    orc = float(((delta[oracle_rows] > 0) == (oracle[oracle_rows] == 1)).mean()) if oracle_rows.any() else None
    return vote, orc


def split(n, fraction, seed, group_index):
    """(train, valid) row positions of n rows: `fraction` held out, seeded."""
    order = np.random.default_rng([seed, 7, group_index]).permutation(n)
    n_valid = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_valid = min(max(n_valid, 1), n - 1)
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def _scores(model, x, x_next):
    both = model(th.cat([x, x_next]))
    return both[:len(x)], both[len(x):]


def _delta(model, x, x_next):
    with th.no_grad():
        s, s_next = _scores(model, x, x_next)
        return (s_next - s)


def _check_finite(value, group, what):
    if not np.isfinite(value):
        raise FloatingPointError(f"potential '{group}': {what} is {value} (NaN scores): lower lca.lr "
                                 f"or set lca.score_l2 > 0, and check the rankings' observations are finite")


def train_group(name, index, x, x_next, p, settings, device="cpu", bar=None):
    """Train one group's model on rows (x, x_next, p) [P, D], [P, D], [P]. Returns (model, info, train, valid)."""
    train, valid = split(len(p), settings.valid_fraction, settings.seed, index)
    seed = int(np.random.default_rng([settings.seed, 11, index]).integers(2 ** 31))
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        model = Potential(x.shape[1], settings.hidden_dim)
    model.to(device)
    generator = th.Generator().manual_seed(seed)
    opt = th.optim.Adam(model.parameters(), lr=settings.lr)
    X, X2, P = (th.as_tensor(a, dtype=th.float32, device=device) for a in (x, x_next, p))
    tr, va = th.as_tensor(train, device=device), th.as_tensor(valid, device=device)
    best, best_loss, best_epoch, since, epoch = None, np.inf, 0, 0, 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = tr[th.randperm(len(tr), generator=generator).to(device)]
        for start in range(0, len(order), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            s, s_next = _scores(model, X[rows], X2[rows])
            loss = bt_loss(s_next - s, P[rows]).mean()
            if settings.score_l2:
                loss = loss + settings.score_l2 * (s.pow(2) + s_next.pow(2)).mean() / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
        _check_finite(loss.item(), name, f"the training loss at epoch {epoch}")
        if bar is not None:
            bar.update(1)
        if not len(va):
            continue
        model.eval()
        valid_loss = bt_loss(_delta(model, X[va], X2[va]), P[va]).mean().item()
        _check_finite(valid_loss, name, f"the validation loss at epoch {epoch}")
        if bar is not None:
            bar.set_postfix(group=name, valid_loss=f"{valid_loss:.4f}")
        if valid_loss < best_loss:
            best_loss, best_epoch, since = valid_loss, epoch, 0
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= settings.patience:
                break
    if bar is not None:
        bar.update(settings.epochs - epoch)  # epochs skipped by early stopping
    if best is not None:
        model.load_state_dict(best)
    else:
        best_epoch = epoch
    model.eval()
    return model.cpu(), {"epochs": epoch, "best_epoch": best_epoch}, train, valid


def train_potentials(rankings: Rankings, settings: TrainSettings, device="cpu", bar=None, log=None):
    """Train one potential per group on `rankings` (see the module's decisions). `bar`: a progress bar advanced by
    one per epoch and group (utils.progress.Bar); `log`: a function taking a line per group."""
    settings.check()
    spec = encoder_spec(rankings.attrs, settings.groups)
    agent_groups = np.asarray(spec["agent_groups"])
    row_group = agent_groups[rankings.agent.astype(int)]
    if settings.groups == "auto" and len(rankings) and not np.array_equal(row_group, rankings.group):
        raise ValueError("the rankings' group column disagrees with attrs agent_groups; rebuild the rankings with "
                         "--config=lca_label")
    p_all = rankings.p_helps
    models, metrics, scales, pooled = {}, {"groups": {}, "pooled": {}}, {}, {"train": [], "valid": []}
    for index, name in enumerate(spec["groups"]):
        rows = np.flatnonzero((row_group == index) & ~np.isnan(p_all))
        skipped = int(((row_group == index) & np.isnan(p_all)).sum())
        if not len(rows):
            incomplete = not rankings.attrs.get("complete", True)
            why = ("the rankings are incomplete (their labeling stopped or failed before these items were "
                   "answered): rerun the command that made them (--config=lca_label, or the lca_ippo / lca_mappo "
                   "run that ranked them), which asks only the missing queries" if incomplete else
                   f"the rankings must rank agents {group_members(spec).get(name, [])} (rerun --config=lca_label"
                   + (")" if settings.groups == "shared" else ", or choose lca.groups=shared)"))
            raise ValueError(f"potential '{name}': no ranked rows with a vote ({skipped} without any answer); {why}")
        dims = spec["inputs"][name]
        x = rankings.obs[rows][:, dims].astype(np.float32)
        x_next = rankings.next_obs[rows][:, dims].astype(np.float32)
        p, oracle = p_all[rows].astype(np.float32), rankings.oracle[rows].astype(np.float32)
        model, info, train, valid = train_group(name, index, x, x_next, p, settings, device, bar)
        delta = _delta(model, th.as_tensor(x), th.as_tensor(x_next)).numpy().astype(np.float64)
        _check_finite(float(np.abs(delta).sum()), name, "a score on the rankings' observations")
        m = {"n_train": len(train), "n_valid": len(valid), "n_no_votes": skipped, **info}
        for part, ids in (("train", train), ("valid", valid)):
            loss = bt_loss(th.as_tensor(delta[ids]), th.as_tensor(p[ids], dtype=th.float64)).mean().item()
            vote, orc = agreement(delta[ids], p[ids], oracle[ids])
            m.update({f"{part}_loss": loss if len(ids) else None, f"{part}_vote_agreement": vote,
                      f"{part}_oracle_agreement": orc})
            pooled[part].append((delta[ids], p[ids], oracle[ids]))
        std = float(delta[train].std())
        m["pair_std"] = std
        scales[name] = std if settings.normalise == "pair_std" and std > 1e-8 else 1.0
        models[name], metrics["groups"][name] = model, m
        if log is not None:
            log(f"potential '{name}' ({len(rows)} rows, {len(dims)} inputs): {summary(m)}")
    for part, chunks in pooled.items():
        delta, p, oracle = (np.concatenate(c) for c in zip(*chunks))
        vote, orc = agreement(delta, p, oracle)
        metrics["pooled"].update({f"{part}_vote_agreement": vote, f"{part}_oracle_agreement": orc, f"n_{part}": len(p)})
    return TrainResult(models, spec, metrics, scales)


def summary(metrics):
    """One console line of a group's metrics."""
    keys = ("epochs", "best_epoch", "train_loss", "valid_loss", "valid_vote_agreement", "valid_oracle_agreement",
            "pair_std")
    return ", ".join(f"{k} {'n/a' if metrics.get(k) is None else format(metrics[k], '.4g')}" for k in keys
                     if k in metrics)


# ---------------------------------------------------------------------------------------------------- artifacts
def plain_env_args(env_args):
    """env args without the run's own arguments (seed, reward settings): what decides the observations."""
    return {k: v for k, v in (env_args or {}).items() if k not in RUN_ARGS}


def artifact_id(rankings_sha256, settings: TrainSettings):
    ident = {"format": FORMAT, "rankings_sha256": rankings_sha256, "settings": settings.identity()}
    return sha256_bytes(json.dumps(ident, sort_keys=True))[:12]


def artifact_folder(results_dir, env, env_args, ident):
    return os.path.join(results_dir, "potentials", env_label({"env": env, "env_args": env_args}), ident)


def potential_hash(meta):
    """SHA-256 naming the potential function: the weights' hashes, the normalisation, the inputs and the model."""
    ident = {k: meta[k] for k in ("sha256", "normalisation", "encoder", "model")}
    return sha256_bytes(json.dumps(ident, sort_keys=True))


def write_artifact(folder, models, meta):
    """Write `models` ({group: Potential}) and meta.json into `folder`, whole or not at all. `meta` gets `files`,
    `sha256` and `potential_sha256`; returns it."""
    os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
    clean_stale_temps(os.path.dirname(os.path.abspath(folder)))
    meta = dict(meta, format=FORMAT, files={}, sha256={})
    with atomic_path(folder) as tmp:
        os.makedirs(tmp)
        for name, model in models.items():
            path = os.path.join(tmp, file_name(name))
            th.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
            meta["files"][name], meta["sha256"][name] = file_name(name), sha256_file(path)
        meta["potential_sha256"] = potential_hash(meta)
        write_json_atomic(os.path.join(tmp, META), meta)
    return meta


@dataclass
class LoadedPotential:
    folder: str
    meta: dict
    models: dict      # group name -> Potential (CPU, eval mode)
    scales: dict      # group name -> divisor
    sha256: str       # potential_hash(meta)

    def __post_init__(self):
        spec = self.meta["encoder"]  # (model, scale, agents, input dims) per group: index tensors built once
        self._groups = [(self.models[name], self.scales[name], th.tensor(agents), th.tensor(spec["inputs"][name]))
                        for name, agents in group_members(spec).items()]

    def scores(self, obs):
        """[N, n, O] observations -> [N, n] potentials sigma_g(o_i) / scale_g (CPU, no gradient)."""
        obs = th.as_tensor(obs, dtype=th.float32, device="cpu")
        out = th.empty(obs.shape[:2], dtype=th.float32)
        with th.no_grad():
            for model, scale, agents, dims in self._groups:
                x = obs.index_select(1, agents).index_select(2, dims)
                out[:, agents] = model(x) / scale
        return out


def read_meta(folder):
    path = os.path.join(folder, META)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} is not an LCA potential folder (no {META}); train one with "
                                f"--config=lca_potential (lca.potential=results/potentials/<env>/<id>)")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path} has format {meta.get('format')!r}, this code reads {FORMAT!r}; train the potential "
                         f"again with --config=lca_potential")
    return meta


def check_compatible(meta, folder, env=None, env_args=None, n_agents=None, obs_shape=None, identity_dims=None):
    """Raise ConfigError naming the difference when the potential in `folder` was trained for another env, env args,
    agent count or observation encoding (a None expectation is not checked)."""
    spec = meta["encoder"]
    problems = []
    if env is not None and meta["env"] != env:
        problems.append(f"env: trained on {meta['env']}, this run has {env}")
    if env_args is not None and plain_env_args(meta["env_args"]) != plain_env_args(env_args):
        problems.append(f"env_args: trained with {plain_env_args(meta['env_args'])}, this run has "
                        f"{plain_env_args(env_args)}")
    if n_agents is not None and int(meta["n_agents"]) != int(n_agents):
        problems.append(f"agent count: trained for {meta['n_agents']} agents, this run has {n_agents}")
    if obs_shape is not None and list(spec["obs_shape"]) != list(np.atleast_1d(obs_shape).tolist()):
        problems.append(f"encoder spec: trained on observations of shape {spec['obs_shape']}, this run's are "
                        f"{list(np.atleast_1d(obs_shape).tolist())}")
    if identity_dims is not None and sorted(spec["identity_dims"]) != sorted(int(d) for d in identity_dims):
        problems.append(f"encoder spec: trained with identity fields at {spec['identity_dims']}, this run's env has "
                        f"them at {sorted(int(d) for d in identity_dims)}")
    if problems:
        raise ConfigError(f"the LCA potential {folder} does not fit this run: " + "; ".join(problems)
                         + ". Train potentials for this env with --config=lca_potential (from rankings of this env, "
                           "--config=lca_label), or point lca.potential at ones made for it")


def load_artifact(folder, **expect):
    """The potential in `folder`, verified (see check_compatible for `expect`: env, env_args, n_agents, obs_shape,
    identity_dims)."""
    meta = read_meta(folder)
    check_compatible(meta, folder, **expect)
    spec, models = meta["encoder"], {}
    for name in spec["groups"]:
        path = os.path.join(folder, meta["files"][name])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing from the potential folder; train it again with "
                                    f"--config=lca_potential")
        actual = sha256_file(path)
        if actual != meta["sha256"][name]:
            raise ValueError(f"{path} was tampered with: its SHA-256 is {actual}, {META} records "
                             f"{meta['sha256'][name]}; train the potential again with --config=lca_potential")
        state = th.load(path, map_location="cpu", weights_only=True)
        if not all(th.isfinite(v).all() for v in state.values()):
            raise FloatingPointError(f"{path} holds NaN or infinite weights (NaN scores); train the potential again "
                                     f"with a lower lca.lr")
        model = Potential(len(spec["inputs"][name]), meta["model"]["hidden_dim"])
        model.load_state_dict(state)
        models[name] = model.eval()
    scales = {name: float(s) for name, s in meta["normalisation"]["scale"].items()}
    return LoadedPotential(folder, meta, models, scales, potential_hash(meta))


def check_episodes(args):
    """lca.check_episodes, checked: oracle episodes to play after training a potential (0 = none)."""
    value = args.lca["check_episodes"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"lca.check_episodes must be a whole number >= 0 (0 skips the oracle-episode check), got "
                         f"{value!r}")
    return value


def check_env(attrs, rankings_path):
    """The rankings' env for the oracle-episode check, refused (before any training) when its agents or observations
    are not the ones the rankings hold."""
    env = make_env(attrs["env"], **plain_env_args(attrs["env_args"]))
    shape = [int(d) for d in np.atleast_1d(attrs["obs_shape"])]
    if env.n_agents != int(attrs["n_agents"]) or [env.get_obs_size()] != shape:
        env.close()
        raise ConfigError(f"the rankings {rankings_path} hold {attrs['n_agents']} agents with observations {shape}, "
                          f"but env {attrs['env']} with their env_args has {env.n_agents} agents with observations "
                          f"[{env.get_obs_size()}]: rebuild the rankings with --config=lca_label, or skip the "
                          f"oracle-episode check with lca.check_episodes=0")
    return env


def check_rankings_env(attrs, path, env, env_args):
    """ConfigError unless the rankings (their attrs) are of env `env` with `env_args` (the run's own arguments
    aside)."""
    if attrs["env"] != env or plain_env_args(attrs["env_args"]) != plain_env_args(env_args):
        raise ConfigError(f"the rankings {path} are of env {attrs['env']} with env_args "
                          f"{plain_env_args(attrs['env_args'])}, this run has env {env} with env_args "
                          f"{plain_env_args(env_args)}: use the rankings' --env-config and env_args, or rank this "
                          f"env's pairs with --config=lca_label")


def check_files(config):
    """Before a run starts (run/preflight.py): the files the lca.* keys name exist and are of this run's env, so a
    wrong path fails in one line before any ranking, training or RL. `lca.rankings` (attrs only) where the run
    trains from it (run=shape, or a shaper=lca training run without lca.potential), `lca.potential` (meta.json)
    where a training run shapes with it. Evaluation needs neither (its test episodes are not shaped)."""
    from shapers.lca.rankings import read_attrs

    lca, env, env_args = config.get("lca") or {}, config["env"], config.get("env_args") or {}
    shaping = config.get("shaper") == "lca" and config.get("run") == "online" and not config.get("evaluate")
    if config.get("run") == "shape" and not lca.get("rankings"):
        raise ConfigError("run=shape needs a rankings file: lca.rankings=results/rankings/<env>/<id>/rankings.h5 "
                          "(rank state pairs with --config=lca_label)")
    if shaping and lca.get("potential"):
        folder = repo_relative(lca["potential"])
        if not os.path.isdir(folder):
            raise ConfigError(f"lca.potential={lca['potential']} is not a folder: give a potential folder "
                              f"results/potentials/<env>/<id> (--config=lca_potential), or leave lca.potential "
                              f"empty to rank and train here")
        try:
            meta = read_meta(folder)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        check_compatible(meta, folder, env=env, env_args=env_args)
    elif lca.get("rankings") and (config.get("run") == "shape" or shaping):
        path = repo_relative(lca["rankings"])
        check_rankings_env(read_attrs(path), path, env, env_args)


def train_or_reuse(rankings_path, settings: TrainSettings, results_dir, expect_env=None, device="cpu", progress=None,
                   log=None, check_episodes=0, allow_incomplete=False):
    """(folder, meta, reused): the potential trained from the rankings file with `settings`, trained now and written
    to results_dir/potentials/<env>/<id> unless that folder already holds it. `expect_env`: (env, env_args) the
    rankings must be of; `progress`: total epochs -> a progress bar (utils.progress.Bar), closed here;
    `check_episodes`: oracle episodes of oracle_check.oracle_episode_check on a new potential (0 = none), stored in
    meta metrics["oracle_episodes"] (not part of the id: it describes the potential, it does not change it).
    Rankings whose labeling stopped early are refused (rankings.check_complete), a potential of them reused or not,
    unless `allow_incomplete` (lca.allow_incomplete): then a warning, and meta's rankings say complete: false."""
    settings.check()
    rankings = read_rankings(rankings_path)
    attrs = rankings.attrs
    if expect_env is not None:
        check_rankings_env(attrs, rankings_path, *expect_env)
    incomplete = check_complete(rankings, rankings_path, allow_incomplete)
    if incomplete:
        warn_log.warning(f"{incomplete}: training on the answered items only (lca.allow_incomplete=True)")
    sha = rankings_hash(rankings_path)
    folder = artifact_folder(results_dir, attrs["env"], attrs["env_args"], artifact_id(sha, settings))
    if os.path.isfile(os.path.join(folder, META)):
        return folder, load_artifact(folder).meta, True
    env = check_env(attrs, rankings_path) if check_episodes else None
    bar = None if progress is None else progress(settings.epochs * len(encoder_spec(attrs, settings.groups)["groups"]))
    try:
        result = train_potentials(rankings, settings, device=device, bar=bar, log=log)
    finally:
        if bar is not None:
            bar.close()
    meta = {"rankings": {"path": os.path.abspath(rankings_path), "sha256": sha, "rows": len(rankings),
                         "complete": incomplete is None,
                         "queries": attrs["queries"], "pair_source": attrs.get("pair_source"),
                         "pair_seed": attrs.get("pair_seed")},
            "env": attrs["env"], "env_args": plain_env_args(attrs["env_args"]), "n_agents": int(attrs["n_agents"]),
            "encoder": result.spec, "model": {"hidden_dim": settings.hidden_dim, "hidden_layers": 2,
                                              "activation": "relu", "head": "linear"},
            "settings": settings.identity(), "metrics": result.metrics,
            "normalisation": {"mode": settings.normalise, "scale": result.scales}}
    if env is not None:
        models = {name: model.cpu().eval() for name, model in result.models.items()}
        try:
            check = oracle_episode_check(LoadedPotential(folder, meta, models, result.scales, ""), env,
                                         episodes=check_episodes, seed=settings.seed)
        finally:
            env.close()
        meta["metrics"]["oracle_episodes"] = check
        if log is not None:
            log(describe_check(check))
    if os.path.isfile(os.path.join(folder, META)):  # another process finished the same potential meanwhile
        return folder, load_artifact(folder).meta, True
    return folder, write_artifact(folder, result.models, meta), False
