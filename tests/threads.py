"""A fixture body shared by test folders of tiny-tensor code, and a context manager pinning torch's threads."""

import contextlib

import torch


def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster and immune to shared-CPU contention (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block with `count` torch intra-op threads (restored afterwards). Float reductions split their work
    by thread, so runs that must be byte-identical pin the same count, whatever the machine's core count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
