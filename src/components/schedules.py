"""Exploration schedules. They are pure functions of t_env, so a resumed run needs no extra state."""
import math

from utils.config import CHOICES

DECAYS = CHOICES["epsilon_decay"]  # linear | exp


class DecayThenFlatSchedule:
    def __init__(self, start, finish, time_length, decay="linear"):
        self.start, self.finish, self.time_length, self.decay = start, finish, max(time_length, 1), decay
        self.delta = (start - finish) / self.time_length
        if decay == "exp":
            self.exp_scaling = -self.time_length / math.log(finish) if finish > 0 else 1
        elif decay != "linear":
            raise ValueError(f"epsilon_decay must be one of {', '.join(DECAYS)}, not '{decay}'")

    def eval(self, t):
        if self.decay == "linear":
            return max(self.finish, self.start - self.delta * t)
        return min(self.start, max(self.finish, math.exp(-t / self.exp_scaling)))
