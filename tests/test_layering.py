"""The floors import only downward: ``lint-imports`` keeps every contract in pyproject.toml.

The contracts (``[tool.importlinter]``) are the checked form of DESIGN.md rule 8; this test fails
with lint-imports' own report, which names the importing module, the import and its line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_contracts_are_kept():
    # --no-cache: read the tree as it is and write no .import_linter_cache into the repository.
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
