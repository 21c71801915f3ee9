"""What a learner is and needs, declared on its class (or instance) so the run loops never probe:

- `on_policy`: train once per `batch_size` fresh episodes, on exactly those (PPO family), instead of sampling
  the replay buffer;
- `offline`: trains from datasets (`run: offline`), not from its own rollouts (see OfflineLearner);
- `uses_replay_buffer`: the run setup allocates a replay buffer only for such learners (read from the class);
- `batches`: the batches `train` needs per update, by name. Online learners train on one EpisodeBatch ("data");
  offline learners take a dict {name: EpisodeBatch} holding every name in `batches` (BC(β): {"data", "expert"};
  O-MAPL and MARL-SL: {"preferences"}, a PairBatch of labeled trajectory pairs). The offline loop fails before
  training when a needed kind of data was not given;
- `labels_at_end` (offline): the learner labels its training dataset at the end (OfflineLearner.label_dataset);
- `reads_rewards` (offline; every offline learner declares it): `train` reads the batches' per-step `reward` (OMAR,
  OMIGA) or not (BC, MisoDICE, O-MAPL, MARL-SL); run: offline says that `offline_reward` is not used by a learner
  that reads none, and leaves it out of the run, as it does for `offline_expert` and `preference_set`;
- `trains_actor`: False for a learner whose run trains no policy (MARL-SL step 1 learns a reward model): the
  offline loop then runs no test episodes (the untrained actor's score would read as the method's) and
  `evaluate=True` is refused;
- `agent_output_type`: what the actor (the mac's agent) must output for this learner: "q" (action values: the
  Q-learners) or "pi_logits" (a policy: PPO, the offline actor learners); None: either (a learner that trains no
  actor). src/main.py's preflight refuses a config that sets the other one, before anything is built;
- `per_agent_rewards`: the learner trains on per-agent rewards `reward` [B, T, n_agents] (common_reward=False, or
  a per-agent shaper such as lca); the run setup refuses those for learners that train on one team reward.

A learner lists what it holds once, in `state_parts()`; moving between devices, saving and loading checkpoints
(and so resuming) are written here from that list.
"""
from learners.common import load_state, save_state

LEARNER_FILE = "learner"  # the checkpoint file that also holds the learner's `counters`


class Learner:
    on_policy = False
    offline = False
    uses_replay_buffer = True
    batches = frozenset({"data"})
    per_agent_rewards = False
    trains_actor = True
    agent_output_type = None
    counters = ("log_stats_t",)  # plain values of the learner (attribute names) saved in learner.th

    def needs(self, kind):
        return kind in self.batches

    def state_parts(self):
        """Everything the learner holds besides the actor `self.mac` (whose agent.th the mac writes itself), as
        checkpoint file name -> part. A part has state_dict(), load_state_dict(state) and to(device) (networks,
        optimisers, running statistics, target updaters). A dict of parts is saved as one file of their states; a
        None part is not saved (inside a dict: saved as None). The file "learner" also holds the `counters`."""
        raise NotImplementedError(f"{type(self).__name__} must list its state_parts()")

    def upgrade_state(self, name, state, path):
        """The state of checkpoint file `name` as this version loads it (a learner converts files that an older
        version wrote differently; `path`: the checkpoint folder, to read other files)."""
        return state

    def all_parts(self):
        """The mac, then every part of state_parts() (dicts flattened, None skipped)."""
        yield self.mac
        for part in self.state_parts().values():
            for p in part.values() if isinstance(part, dict) else [part]:
                if p is not None:
                    yield p

    def to(self, device):
        for part in self.all_parts():
            part.to(device)
        return self

    def cuda(self):
        return self.to("cuda")

    # ----- checkpoints: results/models/<run>/<t_env>/<file>.th -----
    def save_models(self, path):
        self.mac.save_models(path)
        files = {name: _state(part) for name, part in self.state_parts().items() if part is not None}
        files[LEARNER_FILE] = {**files.get(LEARNER_FILE, {}), **{c: getattr(self, c) for c in self.counters}}
        for name, state in files.items():
            save_state(path, name, state)

    def load_models(self, path, evaluate=False):
        """evaluate=True: only the actor (for rollouts)."""
        self.mac.load_models(path)
        if evaluate:
            return
        for name, part in self.state_parts().items():
            if part is not None:
                _load(part, self.upgrade_state(name, load_state(path, name), path))
        learner = load_state(path, LEARNER_FILE)
        for c in self.counters:
            setattr(self, c, learner[c])


def _state(part):
    if isinstance(part, dict):
        return {k: None if p is None else p.state_dict() for k, p in part.items()}
    return part.state_dict()


def _load(part, state):
    if not isinstance(part, dict):
        part.load_state_dict(state)
        return
    for k, p in part.items():
        if p is not None and state[k] is not None:  # None: the part was off when saved (e.g. reward_stats)
            p.load_state_dict(state[k])


class OfflineLearner(Learner):
    """Trains from datasets: `train(batches, t_env, episode_num)` with batches = {name: EpisodeBatch} for every
    name in `batches`; no replay buffer."""

    offline = True
    uses_replay_buffer = False

    def train(self, batches, t_env, episode_num):
        raise NotImplementedError

    # True: the learner labels the episodes of its training dataset (O-MAPL's recovered returns and top-K expert
    # flags, MARL-SL's rewards); run: offline then calls label_dataset at every evaluation (stats logged) and writes
    # the labels of the last call into the dataset with the labeling store at the end of training.
    labels_at_end = False
    # with labels_at_end: the config key that names the labels (omapl_label_name), which run: offline's errors name
    label_name_key = None
    # whether train reads the batches' per-step `reward` (offline_reward replaces it): True or False on every offline
    # learner; None (undeclared) is refused by run: offline
    reads_rewards = None

    def validation_loss(self, batch):
        """{stat name: value} on a held-out batch, logged by the offline loop (empty: nothing to validate)."""
        return {}

    def fit_data(self, data):
        """Called once by `run: offline` with the training dataset D_U before the first update of a fresh run (not
        on resume: what a learner derives here, e.g. input statistics, belongs in its checkpoint)."""

    def check_data(self, datasets):
        """Called once the data is loaded ({name: dataset} for every name in `batches`), before any step: a learner
        refuses data it cannot use (e.g. more top-K episodes than the dataset holds) before training on it."""

    def label_dataset(self, data, step):
        """Learners with `labels_at_end`: labels of every episode of `data` (the training dataset as stored) at
        gradient step `step`, as {"labels": {name: array [E, ...]}, "stats": {name: float} (logged at `step`),
        "info": {...} (the run's info.json, printed at the end), "refused": why no label may be written from them
        (e.g. constant scores: a top K that is only the tie rule's choice), or None}."""
        raise NotImplementedError(f"{type(self).__name__} sets labels_at_end but has no label_dataset")
