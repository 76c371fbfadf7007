"""One torch thread for tests of tiny models."""

import contextlib

import torch


@contextlib.contextmanager
def single_thread():
    """Torch on one thread inside the block: tiny models run faster so, and a busy 2-core machine's
    OpenMP threads do not contend (milliseconds per small convolution with two threads, microseconds with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
