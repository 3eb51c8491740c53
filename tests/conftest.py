"""Shared test settings."""

import torch

# Two cores are shared with Ray workers and helper processes in some tests: one intra-op thread
# keeps CPU timing predictable and avoids OpenMP oversubscription stalls.
torch.set_num_threads(1)
