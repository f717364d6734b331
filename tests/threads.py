"""A fixture body shared by test folders of tiny-tensor code."""

import torch


def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster and immune to shared-CPU contention (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
