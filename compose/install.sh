#!/bin/sh
# Install Batcomputer into a virtual environment, the way the image does (compose/Dockerfile runs this script)
# and the way the tests check it (tests/integration/deploy/test_compose.py runs it into a temporary venv), so the image's install
# path is tested even where no image can be built.
#
#   compose/install.sh VENV REPO
#
# 1. VENV: a new virtual environment made by $PYTHON (default python3; must be Python 3.11, as the lock is).
# 2. The runtime dependencies of pyproject.toml (and its `azure` extra, for abfs:// registries), at the versions
#    pinned in requirements.lock, from wheels only (no compiler needed, none in the image). The lock also pins
#    the development tools (pytest, mypy, playwright, hadolint...): they stay out of the image. A dependency
#    that the lock does not pin at the installed version fails the install.
# 3. The app from REPO with --no-deps, editable: it runs from its source tree, where the gateway finds the web
#    client's pages (api/web) and fonts (node_modules/@fontsource), and training finds data/sources.toml.
# 4. Without the libraries' test suites, byte-compiled, and checked: `batcomputer --help` runs, the gateway imports without scikit-learn or pandas,
#    and the workers, stream consumers, flows and training import.
set -eu

usage="usage: compose/install.sh VENV REPO"
venv=${1:?$usage}
repo=${2:?$usage}
python=${PYTHON:-python3}
repo=$(cd "$repo" && pwd)

"$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "requirements.lock is for Python 3.11")'
"$python" -m venv "$venv"
venv=$(cd "$venv" && pwd)
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check --no-input --quiet "$@"; }

# The runtime requirements, as pyproject.toml states them.
"$py" - "$repo/pyproject.toml" > "$venv/runtime-requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join([*project["dependencies"], *project["optional-dependencies"]["azure"]]))
PY
pip install --only-binary=:all: --constraint "$repo/requirements.lock" --requirement "$venv/runtime-requirements.txt"
pip install --no-deps --editable "$repo"

# Every installed distribution must be pinned, at that version, in the lock.
pip freeze --exclude-editable > "$venv/installed.txt"
"$py" - "$repo/requirements.lock" "$venv/installed.txt" <<'PY'
import re, sys
def pins(path):
    lines = [line.strip() for line in open(path)]
    return {re.sub(r"[-_.]+", "-", line.lower()) for line in lines if line and not line.startswith("#")}
loose = sorted(pins(sys.argv[2]) - pins(sys.argv[1]))
sys.exit("installed but not pinned so in requirements.lock: " + ", ".join(loose) if loose else 0)
PY
pip check

# What the runtime never runs: the libraries' own test suites and pyarrow's C++ headers (about 125 MB). The
# imports below and the image smoke test (compose/smoke.py) check that nothing the app uses went with them.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
find "$site" -mindepth 2 -maxdepth 3 -type d -name tests -prune -exec rm -rf {} +
rm -rf "$site/pyarrow/include"

for package in api batcomputer cli orchestration training worker; do
  "$py" -m compileall -q "$repo/$package"
done

cd /  # import the installed app, not whatever lies in the current directory
"$venv/bin/batcomputer" --help > /dev/null
"$py" - <<'PY'
import sys
import api.app
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "pandas", "scipy", "joblib", "pyarrow", "worker"})
sys.exit(f"the gateway imports {heavy}" if heavy else 0)
PY
"$py" -c 'import cli.stack, worker.app, worker.tasks, worker.stream_consumer, worker.parquet.runner, orchestration.deployments, training.trainer'
echo "installed Batcomputer into $venv"
