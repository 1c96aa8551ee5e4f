"""Where the benchmarks and the tests find the shared reference data (made by the official code, tiny configs):
../shared/fixtures beside the repository, as CI has it. The one place that path is spelled out."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
