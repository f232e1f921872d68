"""The README's ten-line example runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_matches_its_comments():
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    # KL(p‖q) = ½ log(25/9) = 0.51082562376599068..., to an ulp
    assert lines[0].startswith("tensor(0.5108")
    assert abs(float(lines[0].split()[-1]) - 0.5 * math.log(25 / 9)) <= 2e-16
    assert lines[1].startswith("tensor(0.5108")
    assert lines[2].startswith("tensor(-1.1828") and "-1.18279" in lines[2]
    assert lines[3] == "True"
