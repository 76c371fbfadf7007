"""gflows.runtime: the quick/full switch and its override."""

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
