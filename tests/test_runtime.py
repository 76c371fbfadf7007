"""gflows.runtime: the quick/full switch and its override; the CPU allocator setting."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from gflows import runtime


def test_profile_follows_cuda(monkeypatch):
    monkeypatch.delenv("GFLOWS_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.profile() == "full" and runtime.choose(quick=1, full=2) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.profile() == "quick" and runtime.choose(quick=1, full=2) == 1
    assert runtime.device().type == "cpu"


@pytest.mark.parametrize("value, expected", [("quick", "quick"), ("full", "full"), (" FULL ", "full")])
def test_environment_overrides(monkeypatch, value, expected):
    monkeypatch.setenv("GFLOWS_PROFILE", value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: expected == "quick")
    assert runtime.profile() == expected


def test_bad_profile_is_refused(monkeypatch):
    monkeypatch.setenv("GFLOWS_PROFILE", "fast")
    with pytest.raises(ValueError, match="'quick' or 'full'"):
        runtime.profile()


_STEPS_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from gflows import runtime
    if sys.argv[1] == "keep":
        assert runtime.keep_freed_cpu_memory()
    def step():                # a forward pass keeps 20 activations; the backward frees them, making temporaries
        kept = [torch.ones(400_000) for _ in range(20)]
        while kept:
            product = torch.ones(400_000) * kept.pop()
            del product
    for _ in range(3):
        step()                                    # the first steps grow the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


def _page_faults_per_step(mode: str) -> float:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", _STEPS_FAULTS, mode], capture_output=True, text=True,
                          env=environment, check=True)
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_keeping_freed_memory_ends_the_page_faults_of_repeated_steps():
    # glibc's defaults hand freed 1.6 MB tensors back to the system, so every step faults them in again
    # (hundreds of 4 KB pages); kept, a step reuses them and faults in none
    assert _page_faults_per_step("default") > 100
    assert _page_faults_per_step("keep") < 10


def test_keeping_freed_memory_is_refused_politely_without_glibc(monkeypatch):
    runtime.keep_freed_cpu_memory.cache_clear()
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    try:
        assert runtime.keep_freed_cpu_memory() is False
    finally:
        runtime.keep_freed_cpu_memory.cache_clear()
