from modules.mixers.linear import LinearMixer
from modules.mixers.lmix import LMixer
from modules.mixers.qatten import QattenMixer
from modules.mixers.qllm import FIELDS as QLLM_FIELDS
from modules.mixers.qllm import QLLMMixer
from modules.mixers.qmix import QMixer
from modules.mixers.qplex import QPLEXMixer
from modules.mixers.vdn import VDNMixer

# IQL (no mixer) is handled by the learner and is deliberately not registered.
REGISTRY = {
    "vdn": VDNMixer,
    "qmix": QMixer,
    "qplex": QPLEXMixer,
    "qatten": QattenMixer,
    "lmix": LMixer,  # OMIGA: non-negative state-dependent linear mixer (exposes weights(states))
    "linear": LinearMixer,  # MisoDICE Sec. 5.2: sum_i phi_i v_i + phi_0, phi >= 0, state-independent (weights(states))
    "qllm": QLLMMixer,  # training-free: weights from a TFCAF file (src/qllm), no learnable parameters
}

# Per-state inputs a mixer reads from the batch instead of computing them: the run fills these fields when
# episodes enter the buffer (qllm: the TFCAF's weights and bias, from the sandboxed worker of qllm.features).
BATCH_FIELDS = {"qllm": QLLM_FIELDS}
