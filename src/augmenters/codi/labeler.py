"""CODI's agent-quality labeler: a small network distilled from the LLM's segment labels ("which agent is best in
this H-step segment") that then labels every segment start of the dataset (paper 000, Sec. 4.1 and App. A.1).

Network: one single-layer GRU shared by all agents reads each agent's own steps (its observation, normalised per
dimension with ranges pooled over agents, concatenated with its action one-hot) over the segment's real transitions
(`step_valid`); its hidden state after the last real step goes through a 2-layer MLP to one logit per agent, and a
softmax across agents gives z [n] (sums to 1). No agent id enters, so permuting the agents permutes z, and one
model serves any number of agents.

Training: cross-entropy against labels [N] (agent indices), Adam, a seeded validation split, early stopping on the
validation loss, and the best-validation weights restored at the end. Deterministic given `seed` (on one device).

    lab = AgentQualityLabeler(obs_dim, n_actions, preset("cpu"))
    report = lab.fit(segs, y)                       # segs: offline.segments.Segments of the labelled starts
    z = label_all_starts(lab, ds.arrays(), horizon)  # [E, T+1, n]: labels/codi_z
"""
import copy
import hashlib
import io
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch as th
import torch.nn as nn
import torch.nn.functional as F

from augmenters.codi.normaliser import ObsNormaliser
from offline.segments import Segments, all_starts, segments
from utils.config import ConfigError
from utils.progress import Bar

CHECKPOINT_FORMAT = "codi_labeler/1"


@dataclass
class LabelerConfig:
    hidden: int = 64  # GRU hidden size (paper: 128; 256 for CN4/5)
    mlp_hidden: int = 64  # the MLP's hidden layer
    dropout: float = 0.1  # in the MLP (paper: 0.1; 0.0 for CN4/5)
    lr: float = 1e-3  # Adam (paper: "2x10^?", read as 2e-4)
    batch_size: int = 64
    max_epochs: int = 200
    max_steps: int = 20_000  # gradient steps, whichever of the two limits comes first (paper: <= 150k steps)
    patience: int = 10  # epochs without a lower validation loss before stopping
    valid_fraction: float = 0.1
    seed: int = 0


PRESETS = {
    # measured on 2 CPU cores: see tests/augmenters/test_codi_labeler.py for the synthetic task's accuracy
    "cpu": LabelerConfig(),
    "paper": LabelerConfig(hidden=128, mlp_hidden=128, dropout=0.1, lr=2e-4, batch_size=32, max_epochs=1000,
                           max_steps=150_000, patience=20),
}


def preset(name="cpu", **overrides):
    """The LabelerConfig of preset `name` ('cpu' or 'paper') with `overrides` (field=value) applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown labeler preset {name!r}; choose one of {sorted(PRESETS)}")
    unknown = set(overrides) - set(LabelerConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown labeler setting(s) {sorted(unknown)}; known: "
                         f"{sorted(LabelerConfig.__dataclass_fields__)}")
    return replace(PRESETS[name], **overrides)


# ----- inputs -----
def _segment_arrays(data):
    """(obs [N, H, n, O] float32, actions [N, H, n] int64, step_valid [N, H] bool) from Segments or a dict."""
    if isinstance(data, Segments):
        obs, actions, valid = data.obs, data.actions, data.step_valid
    elif isinstance(data, dict):
        missing = [k for k in ("obs", "actions", "step_valid") if k not in data]
        if missing:
            raise ValueError(f"labeler input: missing {missing}; pass offline.segments.Segments or a dict with obs "
                             f"[N, H, n, O], actions [N, H, n] and step_valid [N, H]")
        obs, actions, valid = data["obs"], data["actions"], data["step_valid"]
    else:
        raise TypeError(f"labeler input must be offline.segments.Segments or a dict of arrays, got {type(data)}")
    obs, actions, valid = np.asarray(obs, np.float32), np.asarray(actions, np.int64), np.asarray(valid, bool)
    if obs.ndim != 4 or actions.shape != obs.shape[:3] or valid.shape != obs.shape[:2]:
        raise ValueError(f"labeler input shapes: obs {obs.shape}, actions {actions.shape}, step_valid {valid.shape}; "
                         f"expected [N, H, n, O], [N, H, n], [N, H]")
    if len(valid) and not valid[:, 0].all():
        raise ValueError("labeler input: every segment needs a real first step (step_valid[:, 0]); build segments "
                         "with offline.segments.segments at real starts")
    if len(valid) and (valid[:, 1:] & ~valid[:, :-1]).any():
        raise ValueError("labeler input: step_valid must be a prefix (real steps, then padding) in every segment")
    return obs, actions, valid


# ----- the network -----
class LabelerNet(nn.Module):
    """obs [N, H, n, O], actions [N, H, n] (int), lengths [N] (real steps, >= 1) -> logits [N, n]."""

    def __init__(self, obs_dim, n_actions, hidden, mlp_hidden, dropout):
        super().__init__()
        self.obs_dim, self.n_actions = int(obs_dim), int(n_actions)
        self.gru = nn.GRU(self.obs_dim + self.n_actions, hidden, num_layers=1, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, mlp_hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(mlp_hidden, 1))
        # the observation normalisation (ObsNormaliser's, pooled over agents), kept in the state_dict
        self.register_buffer("obs_centre", th.zeros(self.obs_dim))
        self.register_buffer("obs_scale", th.ones(self.obs_dim))
        self.register_buffer("obs_used", th.ones(self.obs_dim))

    def set_normaliser(self, norm):
        """Take the (agent-pooled) ranges of an ObsNormaliser: constant dimensions are zeroed, the rest in [-1, 1]."""
        row = lambda a: th.as_tensor(np.asarray(a, np.float32).reshape(-1, self.obs_dim)[0])  # noqa: E731
        self.obs_centre.copy_(row(norm.centre))
        self.obs_scale.copy_(row(norm.scale))
        self.obs_used.copy_(row(norm.generated.astype(np.float32)))

    def forward(self, obs, actions, lengths):
        N, H, n, _ = obs.shape
        x = (obs - self.obs_centre) / self.obs_scale * self.obs_used
        x = th.cat([x, F.one_hot(actions.clamp(min=0), self.n_actions).to(x.dtype)], dim=-1)
        x = x.permute(0, 2, 1, 3).reshape(N * n, H, -1)  # every agent's own sequence, one shared GRU
        out, _ = self.gru(x)  # [N*n, H, hidden]; causal, so the output at the last real step ignores the padding
        last = (lengths - 1).clamp(min=0).repeat_interleave(n)
        h = out[th.arange(N * n, device=out.device), last]
        return self.head(h).reshape(N, n)


# ----- the labeler -----
@dataclass
class FitReport:
    history: list  # per epoch: {epoch, steps, train_loss, train_acc, val_loss, val_acc}
    best_epoch: int  # the epoch whose weights were restored (0-based; the last one without validation)
    best_val_loss: float
    stopped_early: bool
    steps: int  # gradient steps taken
    train_index: np.ndarray  # rows of the fit's input used for training / validation
    val_index: np.ndarray

    def to_dict(self):
        d = asdict(self)
        d["train_index"], d["val_index"] = len(self.train_index), len(self.val_index)  # counts, not rows
        return d


class AgentQualityLabeler:
    def __init__(self, obs_dim, n_actions, config=None, device="cpu"):
        self.config = config or LabelerConfig()
        self.device = th.device(device)
        with th.random.fork_rng(devices=[]):  # seeded initial weights without touching the caller's RNG
            th.manual_seed(self.config.seed)
            self.net = LabelerNet(obs_dim, n_actions, self.config.hidden, self.config.mlp_hidden,
                                  self.config.dropout)
        self.net.to(self.device)

    @property
    def obs_dim(self):
        return self.net.obs_dim

    @property
    def n_actions(self):
        return self.net.n_actions

    def _tensors(self, obs, actions, valid, rows):
        return (th.as_tensor(obs[rows], device=self.device), th.as_tensor(actions[rows], device=self.device),
                th.as_tensor(valid[rows].sum(axis=1), device=self.device))

    def _check(self, obs, actions):
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"labeler: observations have {obs.shape[-1]} dimensions, the labeler was built for "
                             f"{self.obs_dim} (a different env or env_args?)")
        if actions.size and (actions.min() < 0 or actions.max() >= self.n_actions):
            raise ValueError(f"labeler: actions in {actions.min()}..{actions.max()}, the labeler was built for "
                             f"{self.n_actions} actions (a different env or env_args?)")

    def fit(self, data, labels, log=None, progress=None):
        """Train on segments `data` (Segments or a dict, see _segment_arrays) labelled `labels [N]` (the best
        agent's index). `log(str)`: one line per epoch (default none); `progress`: a utils.progress Bar over epochs
        (default: drawn on a terminal only). Returns a FitReport; the net holds the best-validation weights."""
        cfg = self.config
        obs, actions, valid = _segment_arrays(data)
        self._check(obs, actions)
        y = np.asarray(labels).reshape(-1)
        N, n = obs.shape[0], obs.shape[2]
        if len(y) != N:
            raise ValueError(f"labeler.fit: {len(y)} labels for {N} segments")
        if y.dtype.kind not in "iu" or (N and (y.min() < 0 or y.max() >= n)):
            raise ValueError(f"labeler.fit: labels must be agent indices 0..{n - 1}; drop unlabelled (-1) segments "
                             f"first (labelled_segments does)")
        n_val = int(round(cfg.valid_fraction * N))
        if cfg.valid_fraction > 0 and not 1 <= n_val < N:
            raise ConfigError(f"the labeler's {N} labelled segments are too few for its {cfg.valid_fraction:.0%} "
                              f"validation split (early stopping): label more segments, e.g. rerun "
                              f"--config=label_agent_quality with a larger label_segments and label_overwrite=True")
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(N)
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        self.net.set_normaliser(ObsNormaliser.fit(obs[train_idx], valid[train_idx], per_agent=False))
        y_t = th.as_tensor(y.astype(np.int64), device=self.device)
        opt = th.optim.Adam(self.net.parameters(), lr=cfg.lr)
        history, best, best_state, bad, steps = [], (np.inf, -1), None, 0, 0
        bar = progress if progress is not None else Bar(total=cfg.max_epochs, desc="labeler", unit="epoch")
        with th.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            th.manual_seed(cfg.seed + 1)  # dropout
            for epoch in range(cfg.max_epochs):
                self.net.train()
                tot_loss, tot_hit, seen = 0.0, 0, 0
                rows = train_idx[rng.permutation(len(train_idx))]
                for b in range(0, len(rows), cfg.batch_size):
                    batch = rows[b:b + cfg.batch_size]
                    logits = self.net(*self._tensors(obs, actions, valid, batch))
                    loss = F.cross_entropy(logits, y_t[batch])
                    if not th.isfinite(loss):
                        raise FloatingPointError(
                            f"GRU labeler: the training loss is {float(loss)} at step {steps} (epoch {epoch}); "
                            f"lower labeler_lr (now {cfg.lr}) or check the dataset's observations for NaN/inf")
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    steps += 1
                    tot_loss += float(loss.detach()) * len(batch)
                    tot_hit += int((logits.argmax(1) == y_t[batch]).sum())
                    seen += len(batch)
                    if steps >= cfg.max_steps:
                        break
                row = {"epoch": epoch, "steps": steps, "train_loss": tot_loss / seen, "train_acc": tot_hit / seen}
                if n_val:
                    row["val_loss"], row["val_acc"] = self._evaluate(obs, actions, valid, y, val_idx)
                history.append(row)
                score = row.get("val_loss", -epoch)  # without validation the last epoch is kept
                if score < best[0]:
                    best, bad = (score, epoch), 0
                    best_state = copy.deepcopy(self.net.state_dict())
                else:
                    bad += 1
                if log is not None:
                    log(f"labeler epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                               if k not in ("epoch",)))
                bar.update(1)
                bar.set_postfix(val_acc=f"{row.get('val_acc', float('nan')):.3f}")
                if (n_val and bad >= cfg.patience) or steps >= cfg.max_steps:
                    break
        if progress is None:
            bar.close()
        self.net.load_state_dict(best_state)
        self.net.eval()
        stopped = bool(n_val) and bad >= cfg.patience
        return FitReport(history=history, best_epoch=best[1],
                         best_val_loss=float(best[0]) if n_val else float("nan"), stopped_early=stopped,
                         steps=steps, train_index=train_idx, val_index=val_idx)

    @th.no_grad()
    def _evaluate(self, obs, actions, valid, y, rows):
        self.net.eval()
        logits = self._logits(obs, actions, valid, rows, batch_size=4096)
        target = th.as_tensor(y[rows].astype(np.int64))
        return float(F.cross_entropy(logits, target)), float((logits.argmax(1) == target).float().mean())

    @th.no_grad()
    def _logits(self, obs, actions, valid, rows, batch_size):
        out = [self.net(*self._tensors(obs, actions, valid, rows[b:b + batch_size])).float().cpu()
               for b in range(0, len(rows), batch_size)]
        return th.cat(out) if out else th.zeros(0, obs.shape[2])

    @th.no_grad()
    def predict_proba(self, data, batch_size=4096):
        """z [N, n] float32: the probability that each agent is the segment's best (rows sum to 1)."""
        obs, actions, valid = _segment_arrays(data)
        self._check(obs, actions)
        self.net.eval()
        logits = self._logits(obs, actions, valid, np.arange(len(obs)), batch_size)
        return th.softmax(logits, dim=1).numpy().astype(np.float32)

    def predict(self, data, batch_size=4096):
        """[N] int64: the most likely best agent of each segment."""
        return self.predict_proba(data, batch_size).argmax(axis=1)

    # ----- checkpoints -----
    def state_dict(self):
        return {"format": CHECKPOINT_FORMAT, "config": asdict(self.config), "obs_dim": self.obs_dim,
                "n_actions": self.n_actions, "weights": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state_dict(cls, state, device="cpu"):
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a CODI labeler checkpoint (format {state.get('format')!r}, expected "
                             f"{CHECKPOINT_FORMAT!r})")
        lab = cls(state["obs_dim"], state["n_actions"], LabelerConfig(**state["config"]), device=device)
        lab.net.load_state_dict(state["weights"])
        lab.net.eval()
        return lab

    def save(self, path):
        th.save(self.state_dict(), path)

    @classmethod
    def load(cls, path, device="cpu"):
        return cls.from_state_dict(th.load(path, map_location="cpu", weights_only=True), device=device)

    def weights_hash(self):
        """SHA-256 (hex) of the weights and normalisation buffers (names, dtypes, shapes, values), for provenance."""
        h = hashlib.sha256()
        for k, v in sorted(self.net.state_dict().items()):
            t = v.detach().cpu().contiguous()
            h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
            buf = io.BytesIO()
            np.save(buf, t.numpy(), allow_pickle=False)
            h.update(buf.getvalue())
        return h.hexdigest()


# ----- the dataset's labels -----
def labelled_segments(arrays, horizon, label):
    """(Segments, y [M] int64) of the starts that `label [E, T+1]` labels (>= 0; -1 = not asked, any negative =
    no label), e.g. arrays["labels/<label_name>"] written by `run: label` with task agent_quality."""
    label = np.asarray(label)
    filled = arrays["filled"]
    if label.shape[:2] != np.asarray(filled).shape[:2] or label.ndim not in (2, 3):
        raise ValueError(f"segment labels have shape {label.shape}; expected [E, T+1] = {np.asarray(filled).shape[:2]}")
    label = label.reshape(label.shape[:2]).astype(np.int64)
    starts = all_starts(filled)
    y = label[starts[:, 0], starts[:, 1]]
    keep = y >= 0
    if not keep.any():
        raise ValueError("the segment labels label no segment start: make them with --config=label_agent_quality")
    return segments(arrays, horizon, starts[keep]), y[keep]


def label_all_starts(labeler, arrays, horizon, batch_size=4096):
    """codi_z [E, T+1, n] float32: the labeler's z at every segment start t < L of every episode; zeros at steps
    that start no segment (t >= L and padding), so a row summing to 0 means "no label". Segments are built and
    labelled `batch_size` at a time, so memory stays bounded for any dataset (store with
    offline.label_store.write_episode_labels as labels/codi_z)."""
    filled = np.asarray(arrays["filled"])
    E, T1 = filled.shape[:2]
    n = np.asarray(arrays["obs"]).shape[2]
    z = np.zeros((E, T1, n), np.float32)
    starts = all_starts(filled)
    for b in range(0, len(starts), batch_size):
        chunk = starts[b:b + batch_size]
        z[chunk[:, 0], chunk[:, 1]] = labeler.predict_proba(segments(arrays, horizon, chunk), batch_size)
    return z


# ----- accuracy report -----
def agreement(pred, reference, n_agents):
    """How often `pred [N]` (agent indices, or probabilities [N, n]) equals `reference [N]` where it is known
    (>= 0). JSON-able: {n, accuracy (None when n = 0), confusion [n][n] (rows: reference, columns: predicted),
    recall per reference agent (None where it never occurs)}."""
    pred = np.asarray(pred)
    pred = pred.argmax(axis=1) if pred.ndim == 2 else pred.astype(np.int64)
    ref = np.asarray(reference).astype(np.int64).reshape(-1)
    if len(pred) != len(ref):
        raise ValueError(f"agreement: {len(pred)} predictions for {len(ref)} reference labels")
    known = ref >= 0
    conf = np.zeros((n_agents, n_agents), np.int64)
    np.add.at(conf, (ref[known], pred[known]), 1)
    m = int(known.sum())
    rows = conf.sum(axis=1)
    return {"n": m, "accuracy": float(np.trace(conf) / m) if m else None, "confusion": conf.tolist(),
            "recall": [float(conf[i, i] / rows[i]) if rows[i] else None for i in range(n_agents)]}


def labeler_report(pred, given=None, truth=None, n_agents=None):
    """{"vs_given": agreement with the labels trained on (e.g. the LLM's), "vs_truth": with the ground-truth expert}
    for the references given (each [N], -1 where unknown)."""
    pred = np.asarray(pred)
    if n_agents is None:
        if pred.ndim != 2:
            raise ValueError("labeler_report: pass n_agents with predicted indices (or pass probabilities [N, n])")
        n_agents = pred.shape[1]
    out = {}
    for key, ref in (("vs_given", given), ("vs_truth", truth)):
        if ref is not None:
            out[key] = agreement(pred, ref, n_agents)
    return out


def report_markdown(report, names=None):
    """A markdown section per reference of `labeler_report`: accuracy, then the confusion matrix."""
    titles = {"vs_given": "vs the given labels (held out)", "vs_truth": "vs the ground truth"}
    lines = []
    for key, r in report.items():
        k = len(r["confusion"])
        agents = names or [f"agent {i}" for i in range(k)]
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines += [f"**Labeler {titles.get(key, key)}**: accuracy {acc} on {r['n']} segments", "",
                  "| reference \\ predicted | " + " | ".join(agents) + " | recall |",
                  "|---" * (k + 2) + "|"]
        for i, row in enumerate(r["confusion"]):
            rec = "n/a" if r["recall"][i] is None else f"{r['recall'][i]:.3f}"
            lines.append(f"| {agents[i]} | " + " | ".join(str(c) for c in row) + f" | {rec} |")
        lines.append("")
    return "\n".join(lines)
