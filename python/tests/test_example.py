"""The examples in examples/python run and their own checks pass."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_agents_example(children):
    script = str(REPO / "examples" / "python" / "agents.py")
    p = children.popen([sys.executable, script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    assert "the tool rejected my write" in out
    assert out.rstrip().endswith("the frozen agent's stale write was rejected")


def test_standby_example(children):
    script = str(REPO / "examples" / "python" / "standby.py")
    p = children.popen([sys.executable, script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    assert out.count("took over term") == 2
    assert "steps by 3 leaders, terms increasing" in out.rstrip().splitlines()[-1]
