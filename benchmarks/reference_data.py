"""Where the benchmarks and the tests find the shared reference data (made by the official code on tiny
configs): the `shared/fixtures` folder next to the repository's own folder. Everything that reads that data
takes its path from FIXTURES here."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
