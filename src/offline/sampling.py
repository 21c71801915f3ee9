"""Training data for offline learners (`run: offline`): the datasets a config names (`offline_dataset`, several
merged), the expert subset D_E (`offline_expert`), the top fraction and the held-out split, and the seeded
episode sampler whose state goes into checkpoints."""
import numpy as np

from offline.format import DatasetError
from offline.reader import OfflineDataset


def dataset_paths(value):
    paths = [value] if isinstance(value, str) else list(value or [])
    paths = [p for p in paths if p]
    if not paths:
        raise ValueError("run=offline needs a dataset: with offline_dataset=path/to/data.h5 (collect one with "
                         "--config=collect, see the README's offline section)")
    return paths


def load_training_data(args, env_info, _log):
    """(train, valid or None, expert or None) datasets as the config asks for them."""
    env_args = {k: v for k, v in args.env_args.items() if k != "seed"}
    data = None
    for path in dataset_paths(args.offline_dataset):
        ds = OfflineDataset.load(path, lazy=args.offline_lazy, expect_env=(args.env, env_args))
        data = ds if data is None else data.merge(ds)
    shapes = {k: int(np.prod(env_info[k])) for k in data.env_info}
    if data.env_info != shapes:
        raise DatasetError(f"the dataset's shapes {data.env_info} do not match the env's {shapes}: it was "
                           f"collected with other env settings")
    expert = select_expert(data, args.offline_expert, args, env_args)
    if args.offline_top_fraction < 1.0:
        data = data.top_fraction(args.offline_top_fraction)
    valid = None
    if args.offline_valid_fraction > 0:
        data, valid = data.split(args.offline_valid_fraction, seed=args.seed)
    _log.info(f"Offline data: {len(data)} training episodes (mean return {data.returns.mean():.3f})"
              + (f", {len(valid)} validation" if valid is not None else "")
              + (f", {len(expert)} expert episodes (mean return {expert.returns.mean():.3f})" if expert else ""))
    return data, valid, expert


def select_expert(data, spec, args, env_args):
    """D_E for learners that weight expert data: 'quality:<name>' = the episodes whose agents all have that
    ground-truth quality, or the path of a separate dataset."""
    if not spec:
        return None
    if spec.startswith("quality:"):
        name = spec.split(":", 1)[1]
        if name not in data.quality_codes:
            raise DatasetError(f"offline_expert={spec}: the dataset has no quality '{name}' "
                               f"(it has {sorted(data.quality_codes)})")
        rows = np.flatnonzero((data.quality_code_array == data.quality_codes[name]).all(axis=1))
        if len(rows) == 0:
            raise DatasetError(f"offline_expert={spec}: no episode in the dataset has all agents '{name}'")
        return data.subset(rows)
    return OfflineDataset.load(spec, lazy=args.offline_lazy, expect_env=(args.env, env_args))


class Sampler:
    """Episode batches drawn from the datasets with one seeded generator (saved in checkpoints)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def batch(self, dataset, batch_size, device):
        sample = dataset.sample(batch_size, rng=self.rng)
        sample = sample[:, : sample.max_t_filled()]
        return sample.to(device) if device != "cpu" else sample
