"""The CPU pin (cnn_internals/runtime/cpu_pin.py): the kernels' instruction set capped at AVX2 before
torch computes, and a fixed intra-op thread count, so that a fresh clone's `dvc repro` gives
dvc.lock's bytes on any x86-64 CPU with AVX2 or more.

The variables are checked by their effect, in fresh processes started as the stages start:
torch's own report of its ATen kernels and oneDNN's verbose line of the ISA it dispatches to.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnn_internals.runtime import cpu_pin
from cnn_internals.runtime.cpu_pin import ISA_PIN, SWITCH, THREADS, pin_cpu_isa, pinned

REPO = Path(__file__).resolve().parents[1]
STAGES = sorted(p for p in (REPO / "stages").glob("*.py") if not p.name.startswith("_"))

# A stage's start (stages/_bootstrap.py first), then what torch reports of its kernels: ATen's
# capability and, from oneDNN's verbose log of one convolution, the ISA it dispatched to.
PROBE = """
import os, sys
sys.path.insert(0, "stages")
import _bootstrap
import torch
print("aten", torch.backends.cpu.get_cpu_capability())
print("set", *sorted(k for k in {names!r} if k in os.environ))
torch.nn.functional.conv2d(torch.ones(2, 64, 32, 32), torch.ones(64, 64, 3, 3))   # large enough for oneDNN
"""


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ISA_PIN and k != SWITCH}
    return {**env, "ONEDNN_VERBOSE": "1", **extra}


def probe(**extra):
    result = subprocess.run([sys.executable, "-c", PROBE.format(names=tuple(ISA_PIN))], cwd=REPO,
                            env=clean_env(**extra), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    aten = next(line.split()[1] for line in lines if line.startswith("aten "))
    names = next(line.split()[1:] for line in lines if line.startswith("set"))
    isa = next(line for line in lines if "onednn_verbose" in line and ",isa:" in line)
    return aten, names, isa.split(",isa:")[1]


def test_pin_sets_each_library_variable_and_leaves_the_users_own():
    env = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    added = pin_cpu_isa(env)
    assert added == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert env == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_pin_off_sets_nothing_and_a_bad_switch_names_the_choices():
    env = {SWITCH: "OFF"}
    assert pin_cpu_isa(env) == {} and env == {SWITCH: "OFF"}
    assert pinned({}) and pinned({SWITCH: "on"}) and not pinned({SWITCH: " off "})
    with pytest.raises(ValueError, match=r"CNN_INTERNALS_CPU_PIN='fast' is not one of on, off"):
        pin_cpu_isa({SWITCH: "fast"})


def test_a_stage_process_runs_torch_on_avx2_kernels():
    aten, names, isa = probe()
    assert aten == "AVX2"
    assert names == sorted(ISA_PIN)
    assert "AVX2" in isa and "AVX-512" not in isa and "AVX512" not in isa


def test_the_pin_is_read_by_torch_a_users_lower_cap_wins():
    # Below AVX2, so that the effect shows on any x86-64 machine: the variables are in place
    # before torch reads them, and ours do not overwrite the user's.
    aten, names, isa = probe(ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41")
    assert aten == "DEFAULT"
    assert "SSE4.1" in isa and "AVX" not in isa


def test_pin_off_leaves_the_variables_unset():
    aten, names, isa = probe(**{SWITCH: "off"})
    assert names == []


def test_a_bad_switch_stops_a_stage_with_one_line():
    result = subprocess.run([sys.executable, "stages/validate.py"], cwd=REPO, env=clean_env(**{SWITCH: "yes"}),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2          # as every other user error
    assert result.stderr.strip().splitlines() == [
        "error: CNN_INTERNALS_CPU_PIN='yes' is not one of on, off (on: the same bytes on every x86-64 CPU "
        "with AVX2; off: the CPU's widest kernels and all its cores)"]


@pytest.mark.parametrize("script", STAGES, ids=lambda p: p.name)
def test_every_stage_imports_the_bootstrap_before_anything_else(script):
    # _bootstrap imports cnn_internals, which pins the CPU before the stage imports torch.
    tree = ast.parse(script.read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert isinstance(imports[0], ast.Import) and imports[0].names[0].name == "_bootstrap"


def test_bootstrap_imports_the_package_before_the_stage_can_import_torch():
    tree = ast.parse((REPO / "stages" / "_bootstrap.py").read_text())
    imported = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    assert "cnn_internals" in imported and "torch" not in imported


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_pin_threads_fixes_the_count_and_off_leaves_torchs(threads, monkeypatch):
    torch.set_num_threads(1)
    assert cpu_pin.pin_threads() == THREADS == torch.get_num_threads()
    monkeypatch.setenv(SWITCH, "off")
    torch.set_num_threads(1)
    assert cpu_pin.pin_threads() == 1


def test_the_thread_count_changes_a_convolution_nets_bytes(threads):
    # Why the count is pinned: oneDNN splits a convolution's sums over the threads. A random
    # AlexNet's scores for the same images at 1 and at 3 threads.
    from cnn_internals.models import get_net

    torch.manual_seed(0)
    model = get_net("alexnet").build({"weight_init": "paper"}).eval()
    x = torch.randn(4, 3, 224, 224)
    outputs = []
    for count in (1, 3):
        torch.set_num_threads(count)
        with torch.no_grad():
            outputs.append(model(x))
    assert not torch.equal(*outputs)
    torch.testing.assert_close(*outputs, rtol=1e-4, atol=1e-5)        # the same up to rounding
