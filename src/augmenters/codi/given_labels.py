"""The given segment labels CODI's labeler is fitted on: labels/<augment_label_name>, [E, T+1] agent indices
(-1 = not asked) written by --config=label_agent_quality. Checked before use, each mistake one error naming the label
and the fix: missing, made for other episodes (its recorded content fingerprint, as preference sets are checked:
offline.label_store.check_made_for), of another kind (a labeler's float [E, T+1, n] output, fractions, indices
outside the agents), or judging segments of another H than this run's."""
import numpy as np

from offline.label_store import check_made_for
from utils.config import ConfigError


def label_command(path, env_config, name):
    return (f"python src/main.py --config=label_agent_quality --env-config={env_config} with "
            f"offline_dataset={path} label_name={name}")


def given_labels(dataset, arrays, path, name, horizon, fingerprint, env_config, augmenter):
    """labels/<name> of `dataset` (read from `path`; its arrays `arrays`, content fingerprint `fingerprint`) as int64
    [E, T+1], checked (module doc); `augmenter` names the run in the errors."""
    if name in dataset.damaged_labels:
        dataset.label(name)  # the error naming the damage and the edit that removes it
    if name not in dataset.label_names:
        have = ", ".join(dataset.label_names) or "none"
        raise ConfigError(f"augmenter {augmenter} fits its labeler on the segment labels labels/{name}, which "
                          f"{path} does not have (its labels: {have}). Label segments first: "
                          f"{label_command(path, env_config, name)} (labeler=oracle | noisy_oracle | llm), or set "
                          f"augment_label_name to the labels it has")
    attrs = dataset.label_attrs(name)
    again = label_command(path, env_config, name) + " label_overwrite=True"
    if "content_fingerprint" in attrs:  # labels written by other tools record none
        check_made_for(attrs, fingerprint, path, f"labels/{name} of {path}", again)
    label = np.asarray(arrays["labels/" + name])
    problem = _problem(label, np.asarray(arrays["filled"]).shape[:2], int(dataset.env_info["n_agents"]))
    if problem:
        made = [k for k in dataset.label_names if dataset.label_attrs(k).get("task") == "agent_quality"]
        use = (f"give augment_label_name one of the segment labels it has ({', '.join(made)})" if made else
               f"label segments first ({label_command(path, env_config, '<name>')})")
        raise ConfigError(f"labels/{name} of {path} holds {problem}, not segment labels (agent indices [E, T+1], -1 "
                          f"= not asked, the output of --config=label_agent_quality): {use}")
    made_with = (attrs.get("settings") or {}).get("segment_horizon")
    if made_with is not None and int(made_with) != horizon:
        # one H throughout: the labels judge H-step segments, the labeler reads and the diffusion model makes them
        keep = f"set segment_horizon={made_with}, or " if int(made_with) >= 2 else ""
        raise ConfigError(f"labels/{name} of {path} judge segments of {made_with} steps, this run's "
                          f"segment_horizon is {horizon}: {keep}label again ({label_command(path, env_config, name)} "
                          f"segment_horizon={horizon} label_overwrite=True)")
    return label.astype(np.int64)


def _problem(label, shape, n):
    """What makes `label` no segment labels of data [E, T+1] = `shape` with n agents, or None."""
    if label.shape != tuple(shape):
        kind = " (a labeler's output codi_z_*?)" if label.shape[:2] == tuple(shape) and label.ndim == 3 else ""
        return f"a {label.dtype} array of shape {list(label.shape)}{kind} for data [E, T+1] = {list(shape)}"
    values = np.unique(label)
    whole = np.isfinite(values) & (values == np.round(values)) if values.dtype.kind == "f" else np.ones(len(values),
                                                                                                     bool)
    if not whole.all():
        return f"values that are not whole agent indices ({', '.join(f'{v:g}' for v in values[~whole][:5])})"
    bad = values[(values != -1) & ((values < 0) | (values >= n))]
    if len(bad):
        return (f"agent indices {', '.join(str(int(v)) for v in bad[:5])} outside -1 and 0..{n - 1} (this data has "
                f"{n} agents)")
    return None
