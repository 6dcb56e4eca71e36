"""docs/architecture.md states the layer order that tests/test_layers.py enforces."""

import re
from pathlib import Path

from test_layers import LAYERS

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_documented_layer_order_is_the_enforced_one():
    text = DOC.read_text()
    block = re.search(r"<!-- layers:[^>]*-->\s*```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md: no layer block after the '<!-- layers: ... -->' marker"
    documented = tuple(line.split()[0] for line in block.group(1).splitlines() if line.strip())
    assert documented == LAYERS, "docs/architecture.md layer order differs from tests/test_layers.py"
