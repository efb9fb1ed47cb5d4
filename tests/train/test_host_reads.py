"""The counters of host reads and device synchronisations that the speed goals are checked with."""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from diffusion_lib.train import host_reads


def _synchronising_op() -> int:
    """Warn as torch's sync debug mode does for a synchronising operation; the line it warns from."""
    line = inspect.currentframe().f_lineno + 1
    warnings.warn("called a synchronizing CUDA operation")
    return line


def test_device_syncs_are_counted_with_the_line_each_was_called_from(monkeypatch):
    """A CUDA device simulated on the CPU: torch's sync debug mode is stubbed, and the warnings it would
    raise are raised by hand. Each synchronising operation is counted and its calling line named once;
    other warnings are not counted, and the previous debug mode is put back. A site is the innermost
    three frames outside torch, innermost first."""
    modes = ["error"]
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: modes[-1])
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    with host_reads.count_device_syncs(torch.device("cuda")) as syncs:
        assert modes[-1] == "warn"
        lines = {_synchronising_op() for _ in range(2)}  # one site, twice
        warnings.warn("something else entirely")
    (line,) = lines
    (site,) = syncs["sites"]  # the two, from one place
    here = "tests/train/test_host_reads.py"
    frames = site.split(" < ")
    assert syncs["count"] == 2 and len(frames) == 3, site  # innermost first, paths from the repository
    assert frames[0] == f"{here}:{line}" and frames[1].startswith(f"{here}:"), site
    assert modes[-1] == "error"


def test_on_a_cpu_nothing_is_counted_and_warnings_pass_through():
    with pytest.warns(UserWarning, match="synchronizing"):
        with host_reads.count_device_syncs(torch.device("cpu")) as syncs:
            warnings.warn("called a synchronizing CUDA operation")
    assert syncs == {"count": 0, "sites": []}
