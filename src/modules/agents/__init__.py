"""Agent networks by name (`agent` in the config).

Every agent maps per-agent inputs to per-agent outputs and supports two call forms:
`forward(inputs [B,n,I], hidden [B,n,H]) -> (out [B,n,A], hidden)` for acting one step, and
`forward_seq(inputs [B,T,n,I], hidden) -> (out [B,T,n,A], hidden)` for learners, which
unrolls a whole episode in one call instead of a Python loop over time.
"""
from modules.agents.mlp import MLPAgent
from modules.agents.rnn import RNNAgent
from modules.agents.rnn_ns import RNNNSAgent

REGISTRY = {
    "rnn": RNNAgent,
    "mlp": MLPAgent,
    "rnn_ns": RNNNSAgent,
}
