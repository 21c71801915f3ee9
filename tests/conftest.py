import torch

# Small nets on 2 cores: one thread is much faster and avoids oversubscription when
# tests start env worker processes (the runs themselves use the torch_threads config key).
torch.set_num_threads(1)
