"""Thread settings are explicit: `spikeport --threads N` and set_threads(N) give torch's pool
N threads and numpy's BLAS one (spikeport.threads)."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from click.testing import CliRunner

from spikeport.cli.main import main
from spikeport.errors import BadInput
from spikeport.threads import (
    default_threads,
    keep_freed_memory,
    release_freed_memory,
    set_threads,
)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    set_threads(before)


def _blas_threads() -> set[int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}


def test_set_threads_sets_torch_and_blas():
    assert set_threads(1) == {"torch": 1, "blas": 1}
    assert torch.get_num_threads() == 1
    assert _blas_threads() == {1}
    set_threads(2, blas=2)
    assert torch.get_num_threads() == 2 and _blas_threads() == {2}


def test_cli_threads_option_applies_before_the_verb(tmp_path):
    out = CliRunner().invoke(main, ["--threads", "1", "inspect", str(tmp_path / "none.spk")])
    assert out.exit_code == 2 and torch.get_num_threads() == 1
    bad = CliRunner().invoke(main, ["--threads", "0", "inspect", "x.spk"])
    assert bad.exit_code == 2 and "--threads" in bad.output


def test_default_is_one_thread_per_usable_core():
    assert set_threads()["torch"] == default_threads() >= 1
    with pytest.raises(BadInput):
        set_threads(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_goes_back_to_the_kernel_between_stages():
    """keep_freed_memory keeps freed heap blocks mapped; release_freed_memory hands them back:
    a process that filled and freed 200 MiB of small blocks is smaller after it."""
    import numpy as np

    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    assert keep_freed_memory()
    blocks = [np.ones(1 << 20) for _ in range(25)]  # 8 MiB each: below the mmap threshold
    del blocks
    held = resident()
    assert release_freed_memory()
    assert resident() < held - (100 << 20)
