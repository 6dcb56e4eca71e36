"""The README's example is what a fresh `finscale run smoke --set run.threads=1` prints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> list[str]:
    text = README.read_text()
    block = re.search(r"<!-- smoke-output[^>]*-->\n```\n(.*?)```\n<!-- /smoke-output -->", text, re.S)
    assert block, "README.md lost its smoke-output block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and "..." not in ln]


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "make run" in text and "make test" in text
    assert (README.parent / "LICENSE").read_text().startswith("MIT License")
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", text):
        if link != "docs/architecture.md":  # written by another change; linked ahead of it
            assert (README.parent / link).exists(), link


@pytest.mark.slow
def test_readme_example_matches_a_fresh_smoke_run(tmp_path):
    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "finscale", "run", "smoke", "--no-monitor",
                        "--data-dir", str(tmp_path / "data"), "--set", "run.threads=1",
                        "--set", f"output_dir={json.dumps(str(out))}"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    printed = r.stdout.splitlines()
    stale = [ln for ln in readme_example() if ln not in printed]
    start = next(i for i, ln in enumerate(printed) if ln == "findings:")
    assert not stale, ("README.md's smoke-output block differs from a fresh run; replace it by:\n"
                       + "\n".join(printed[start:]))
