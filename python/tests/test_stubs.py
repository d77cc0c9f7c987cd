"""The type stubs of the native module name exactly what it has (they are written by
hand, so this keeps them from drifting)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import shmlease
from shmlease import _shmlease


def _stub_classes() -> dict[str, set[str]]:
    stub = Path(_shmlease.__file__).with_name("_shmlease.pyi")
    if not stub.exists():  # an in-place build: the stub sits in the source tree
        stub = Path(__file__).resolve().parents[1] / "shmlease" / "_shmlease.pyi"
    tree = ast.parse(stub.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {
                n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
    return out


def _public(cls: type) -> set[str]:
    return {n for n in vars(cls) if not n.startswith("_") or n in ("__enter__", "__exit__")}


def test_stubs_match_the_native_classes():
    stubs = _stub_classes()
    assert stubs["Table"] - _public(shmlease.Table) == {"__new__"}  # Table(...) is typed
    assert _public(shmlease.Table) <= stubs["Table"]
    assert stubs["Lease"] == _public(shmlease.Lease)
    for name in ("Election", "Leadership", "Leading"):
        assert stubs[name] == _public(getattr(shmlease, name)), name
    # An iterator's protocol, and the observer's private hand-back, are typed too.
    assert stubs["Observer"] - _public(shmlease.Observer) == {"__iter__", "__next__", "_unread"}
    assert _public(shmlease.Observer) <= stubs["Observer"]
    assert stubs["Stopper"] - _public(shmlease.Stopper) == {"__new__"}
    assert _public(shmlease.Stopper) <= stubs["Stopper"]


def test_everything_public_has_a_docstring():
    for cls in (shmlease.Table, shmlease.Lease, *[getattr(shmlease, n) for n in shmlease.__all__]):
        assert inspect.getdoc(cls), cls
    native = (shmlease.Table, shmlease.Lease, shmlease.Election, shmlease.Leadership,
              shmlease.Observer, shmlease.Leading, shmlease.Stopper)
    for cls in native:
        for name in _public(cls) - {"__exit__"}:
            assert inspect.getdoc(getattr(cls, name)), f"{cls.__name__}.{name}"
