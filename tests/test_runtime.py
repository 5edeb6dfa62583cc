"""Process-level settings of `ddo` commands: glibc malloc tuning and the fused optimizer."""
import json
import os
import subprocess
import sys

import pytest
import torch

from ddo.cli import main
from ddo.train import make_optimizer

PROBE = r"""
import ctypes, json, sys
import torch
from ddo.allocator import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
tuned = tune_malloc()
before = libc.mallinfo2().hblkhd   # blocks mmapped while torch was imported
x = torch.ones(64 * 2**20 // 4)          # 64 MiB: above glibc's largest mmap threshold
during = libc.mallinfo2().hblkhd - before
del x
after = libc.mallinfo2()
print(json.dumps({"tuned": tuned, "mmapped_during": during, "heap_free_after": after.fordblks}))
"""


def _probe(malloc):
    env = {**os.environ, "DDO_MALLOC": malloc}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_tuned_malloc_serves_large_tensors_from_the_heap_and_keeps_them():
    default, tuned = _probe("default"), _probe("tuned")
    assert not default["tuned"] and default["mmapped_during"] >= 64 * 2**20   # glibc's own behaviour
    assert tuned["tuned"] and tuned["mmapped_during"] == 0                     # no mmap: heap blocks
    assert tuned["heap_free_after"] >= 64 * 2**20                              # freed, kept for reuse


def test_in_process_main_leaves_the_allocator_alone(monkeypatch, capsys):
    import ddo.cli

    calls = []
    monkeypatch.setattr(ddo.cli, "tune_malloc", lambda: calls.append(1))
    assert main(["plugins"]) == 0 and calls == []
    assert main(["plugins"], tune_allocator=True) == 0 and calls == [1]
    capsys.readouterr()


def test_unknown_malloc_setting_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("DDO_MALLOC", "fast")
    assert main(["plugins"], tune_allocator=True) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "DDO_MALLOC='fast'" in err and "DDO_MALLOC=default" in err


def test_fused_adam_takes_the_same_step_as_the_loop():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(50, 7)), torch.nn.Parameter(torch.randn(13))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused, loop = make_optimizer(params, 1e-2, torch.device("cpu")), torch.optim.Adam(copies, lr=1e-2)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, copies, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        loop.step()
    for p, q in zip(params, copies):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(params[0], torch.zeros_like(params[0]))
