"""pymarl's Logger: console summaries, Sacred info.json (key / key_T lists) and metrics.json, TensorBoard."""
import logging
from collections import defaultdict

import numpy as np


class Logger:
    def __init__(self, console_logger):
        self.console_logger = console_logger
        self.use_tb = False
        self.use_sacred = False
        self.stats = defaultdict(list)
        self._tb_writer = None

    def setup_tb(self, directory):
        from torch.utils.tensorboard import SummaryWriter  # imported only when used (slow import)

        self._tb_writer = SummaryWriter(log_dir=directory)
        self.use_tb = True

    def setup_sacred(self, sacred_run_dict):
        self.sacred_info = sacred_run_dict.info
        self._run = sacred_run_dict
        self.use_sacred = True

    def log_stat(self, key, value, t, to_sacred=True):
        value = float(value)
        self.stats[key].append((t, value))
        if self.use_tb:
            self._tb_writer.add_scalar(key, value, t)
        if self.use_sacred and to_sacred:
            self.sacred_info.setdefault(key, []).append(value)
            self.sacred_info.setdefault(f"{key}_T", []).append(int(t))
            self._run.log_scalar(key, value, int(t))

    def log_histogram(self, key, values, t):
        if self.use_tb:
            self._tb_writer.add_histogram(key, values, t)

    def print_recent_stats(self):
        if "episode" not in self.stats:
            return
        t_env, episode = self.stats["episode"][-1]
        log_str = f"Recent Stats | t_env: {t_env:>10} | Episode: {int(episode):>8}\n"
        i = 0
        for k, v in sorted(self.stats.items()):
            if k == "episode":
                continue
            i += 1
            window = 5 if k != "epsilon" else 1
            item = f"{np.mean([x[1] for x in v[-window:]]):.4f}"
            log_str += f"{k + ':':<25}{item:>8}"
            log_str += "\n" if i % 4 == 0 else "\t"
        self.console_logger.info(log_str)
        # keep memory bounded on long runs: the console only ever needs the last few entries
        for k in self.stats:
            del self.stats[k][:-5]

    def finish(self):
        if self._tb_writer is not None:
            self._tb_writer.flush()
            self._tb_writer.close()


def get_logger():
    logger = logging.getLogger("pymarl")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s] %(name)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
