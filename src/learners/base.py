"""What a learner is and needs, declared on its class (or instance) so the run loops never probe:

- `on_policy`: train once per `batch_size` fresh episodes, on exactly those (PPO family), instead of sampling
  the replay buffer;
- `offline`: trains from datasets (`run: offline`), not from its own rollouts;
- `batches`: the batches `train` needs per update, by name. "data" is the training batch (positional); every
  other name is passed as the keyword `<name>_batch` (BC(β): {"data", "expert"}; MisoDICE will add
  "preferences"). The offline loop fails before training when a needed kind of data was not given.
"""


class Learner:
    on_policy = False
    offline = False
    batches = frozenset({"data"})

    def needs(self, kind):
        return kind in self.batches

    def device_parts(self):
        """Everything that moves with the learner between devices: networks, running statistics, optimisers
        (None entries are skipped)."""
        raise NotImplementedError(f"{type(self).__name__} must list its device_parts()")

    def to(self, device):
        for part in self.device_parts():
            if part is not None:
                part.to(device)
        return self

    def cuda(self):
        return self.to("cuda")
