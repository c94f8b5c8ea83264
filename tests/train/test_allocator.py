"""The malloc tuning keeps a training step's freed activations in the process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from advrec.train.allocator import DISABLE_ENV

# minor page faults per PGD-3 training step of a 2048-row MF batch, after a warm-up. Transparent
# huge pages are off for the process (prctl PR_SET_THP_DISABLE = 41): with THP on (a machine's
# `always` setting) one fault maps 2 MiB and the count no longer shows how often memory goes back
# to the kernel (CI saw 76 untuned faults per step against ~850 here).
_STEP_FAULTS = """
import ctypes
assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0
import resource, torch
from advrec.adversarial import AdversarialObjective, Attack
from advrec.models import LOSSES
from advrec.models.mf import MF
from advrec.train.allocator import tune_malloc
print(tune_malloc())
torch.manual_seed(0)
model = MF(1000, 2000, 64)
objective = AdversarialObjective(model, LOSSES["bpr"], Attack("pgd", 0.5, steps=3), lam=1.0)
optimizer = torch.optim.Adam(model.parameters())
def step():
    batch = {"user": torch.randint(1000, (2048,)), "item": torch.randint(2000, (2048, 2))}
    out = objective(batch, adversarial=True)
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _start(keep_malloc: bool) -> subprocess.Popen[str]:
    # one thread: no per-thread malloc arenas whose faults would blur the count
    env = {**os.environ, DISABLE_ENV: "1" if keep_malloc else "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _STEP_FAULTS], env=env, text=True,
                            stdout=subprocess.PIPE)


def _result(process: subprocess.Popen[str]) -> tuple[bool, float]:
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    tuned, faults = stdout.split()
    return tuned == "True", float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_malloc_stops_page_faulting_every_step() -> None:
    runs = _start(keep_malloc=False), _start(keep_malloc=True)  # side by side: half the wait
    (tuned, faults), (untuned, baseline) = map(_result, runs)
    assert tuned and not untuned
    # glibc's defaults return the step's large blocks to the kernel and fault them back in
    # (~850 faults per step here); tuned, most blocks are reused (~13-26 faults per step)
    assert faults * 4 < baseline, (faults, baseline)
