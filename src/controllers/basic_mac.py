"""Multi-agent controller: builds agent inputs from an EpisodeBatch and selects actions."""
import torch as th
import torch.nn.functional as F

from components.action_selectors import REGISTRY as action_REGISTRY
from components.action_selectors import UNAVAILABLE_Q
from modules.agents import REGISTRY as agent_REGISTRY
from utils.checkpoint import load_file


class BasicMAC:
    """Agents share one network (pymarl's basic_mac); agent-id and last-action inputs are options."""

    agent_suffix = ""

    def __init__(self, scheme, groups, args):
        self.n_agents = args.n_agents
        self.n_actions = args.n_actions
        self.args = args
        self.agent_output_type = args.agent_output_type
        self.obs_last_action = args.obs_last_action
        self.obs_agent_id = args.obs_agent_id
        self.input_shape = self._get_input_shape(scheme)
        name = args.agent + self.agent_suffix if not args.agent.endswith(self.agent_suffix) else args.agent
        if name not in agent_REGISTRY:
            raise ValueError(f"unknown agent '{name}' for {type(self).__name__}; valid: {sorted(agent_REGISTRY)}")
        self.agent = agent_REGISTRY[name](self.input_shape, args)
        self.action_selector = action_REGISTRY[args.action_selector](args)
        self.hidden_states = None
        self._eye = None
        self.device = th.device("cpu")

    # ----- acting -----
    def select_actions(self, ep_batch, t_ep, t_env, bs=slice(None), test_mode=False):
        avail_actions = ep_batch["avail_actions"][:, t_ep]
        agent_outputs = self.forward(ep_batch, t_ep, test_mode=test_mode)
        return self.action_selector.select_action(agent_outputs[bs], avail_actions[bs], t_env, test_mode=test_mode)

    def forward(self, ep_batch, t, test_mode=False):
        """One step for all agents; advances the hidden state. Returns [B,n,A]."""
        inputs = self._build_inputs(ep_batch, t)
        out, self.hidden_states = self.agent(inputs, self.hidden_states)
        return self._policy_output(out, ep_batch["avail_actions"][:, t])

    def unroll(self, ep_batch, logits=False):
        """All timesteps from a fresh hidden state in one call. Returns [B,T,n,A].

        For policy agents `logits=True` gives masked logits (for log-probabilities) instead of probabilities.
        """
        inputs = self._build_inputs_seq(ep_batch)
        hidden = self.agent.init_hidden(ep_batch.batch_size, self.n_agents)
        out, _ = self.agent.forward_seq(inputs, hidden)
        return self._policy_output(out, ep_batch["avail_actions"][:, : out.shape[1]], logits=logits)

    def _policy_output(self, out, avail_actions, logits=False):
        if self.agent_output_type != "pi_logits":
            return out
        if self.args.mask_before_softmax:
            out = out.masked_fill(avail_actions.to(out.device) == 0, UNAVAILABLE_Q)
        return out if logits else F.softmax(out, dim=-1)

    def init_hidden(self, batch_size):
        self.hidden_states = self.agent.init_hidden(batch_size, self.n_agents)

    # ----- inputs -----
    def _agent_ids(self, device):
        if self._eye is None or self._eye.device != device:
            self._eye = th.eye(self.n_agents, device=device)
        return self._eye

    def _build_inputs(self, batch, t):
        bs = batch.batch_size
        inputs = [batch["obs"][:, t]]
        if self.obs_last_action:
            last = batch["actions_onehot"][:, t - 1] if t > 0 else th.zeros_like(batch["actions_onehot"][:, t])
            inputs.append(last)
        if self.obs_agent_id:
            inputs.append(self._agent_ids(batch["obs"].device).expand(bs, -1, -1))
        return th.cat(inputs, dim=-1).to(self.device)

    def _build_inputs_seq(self, batch):
        bs, t = batch.batch_size, batch.max_seq_length
        inputs = [batch["obs"]]
        if self.obs_last_action:
            onehot = batch["actions_onehot"]
            inputs.append(th.cat([th.zeros_like(onehot[:, :1]), onehot[:, :-1]], dim=1))
        if self.obs_agent_id:
            inputs.append(self._agent_ids(batch["obs"].device).expand(bs, t, -1, -1))
        return th.cat(inputs, dim=-1).to(self.device)

    def _get_input_shape(self, scheme):
        input_shape = scheme["obs"]["vshape"]
        input_shape = input_shape if isinstance(input_shape, int) else input_shape[0]
        if self.obs_last_action:
            input_shape += scheme["actions_onehot"]["vshape"][0]
        if self.obs_agent_id:
            input_shape += self.n_agents
        return input_shape

    # ----- parameters and persistence -----
    def parameters(self):
        return self.agent.parameters()

    def named_parameters(self):
        return self.agent.named_parameters()

    def load_state(self, other_mac):
        self.agent.load_state_dict(other_mac.agent.state_dict())

    def to(self, device):
        self.agent.to(device)
        self.device = th.device(device)
        return self

    def cuda(self):
        return self.to("cuda")

    def state_dict(self):
        return self.agent.state_dict()

    def load_state_dict(self, state):
        self.agent.load_state_dict(state)

    def save_models(self, path):
        th.save(self.agent.state_dict(), f"{path}/agent.th")

    def load_models(self, path):
        self.agent.load_state_dict(load_file(f"{path}/agent.th"))  # weights_only=True; a damaged file is named


class NonSharedMAC(BasicMAC):
    """One network per agent (epymarl's non_shared_mac): `agent: rnn` becomes `rnn_ns`."""

    agent_suffix = "_ns"
