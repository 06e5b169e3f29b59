"""The seed's Postman collection, run by newman against the live gateway."""

from __future__ import annotations

import re
import subprocess

from batcomputer.settings import Settings
from tests.conftest import ROOT, Services

Stack = tuple[str, Settings, Services]
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
COLLECTION = ROOT / "tests" / "postman" / "batcomputer.postman_collection.json"


def test_the_postman_collection_passes(stack: Stack) -> None:
    base, _, _ = stack
    assert NEWMAN.exists(), f"{NEWMAN} is missing: run `make install` (npm ci installs newman)"
    done = subprocess.run([str(NEWMAN), "run", str(COLLECTION), "--env-var", f"baseUrl={base}", "--reporters", "cli",
                           "--disable-unicode", "--color", "off"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    executed = re.search(r"assertions\s*\W\s*(\d+)\s*\W\s*(\d+)", done.stdout)
    assert executed, done.stdout[-2000:]
    total, failed = int(executed.group(1)), int(executed.group(2))
    assert failed == 0 and total >= 13 * 2 + 8  # two assertions per force/crime pair, and the rest
