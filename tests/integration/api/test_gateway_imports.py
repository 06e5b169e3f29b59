"""The gateway starts without scikit-learn, pandas or worker code: checked in a fresh interpreter."""

import json
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import json, sys
from batcomputer.settings import Settings
from api.app import create_app
app = create_app(Settings(registry=sys.argv[1], redis_url="redis://127.0.0.1:1/0"))
client = app.test_client()
assert client.get("/healthz").status_code == 200
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "pandas", "worker", "training", "joblib",
                                                          "scipy", "pyarrow"))
print(json.dumps(heavy))
"""


def test_the_gateway_imports_no_scientific_stack(tmp_path: object) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
