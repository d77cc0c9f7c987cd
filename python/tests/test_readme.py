"""The README's Python section: its snippet runs as written (in a child, against a
table of its own named by $SHMLEASE_TABLE), and its install command is the real one."""

from __future__ import annotations

import re

from conftest import REPO


def _python_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Python")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_readme_python_snippet_runs(children, location):
    section = _python_section()
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert snippets, "no python snippet in the README's Python section"
    for code in snippets:
        r = children.run(code, env={"SHMLEASE_TABLE": location}, timeout=60)
        assert r.returncode == 0, f"README snippet failed:\n{code}\n{r.stderr}"


def test_readme_shows_the_install_command():
    assert "pip install ./python" in _python_section()
