"""The web client in a real browser (Debian's Chromium via Playwright) against the live gateway and real
workers: predictions with both models, a field error from the API shown at its field, a Parquet file
uploaded, followed to 100% and downloaded, the models page; axe-core finds no serious or critical
violations on any page, no request leaves the gateway, and the pages fit a phone. Screenshots of every page
at desktop and phone width go to var/test-artifacts/web/."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests

from batcomputer.models.registry import Registry
from batcomputer.settings import Settings
from tests.conftest import ROOT, Services
from tests.integration.api.test_api_batches import crime_table

Stack = tuple[str, Settings, Services]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "web"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


class Session:
    """A browser page on the gateway that records every request it makes."""

    def __init__(self, browser: Any, base: str, size: str) -> None:
        # bypass_csp only lets the test inject axe-core; the page's own CSP still applies to what it loads
        self.context = browser.new_context(viewport=SIZES[size], bypass_csp=True, accept_downloads=True)
        self.page = self.context.new_page()
        self.base, self.size = base, size
        self.requested: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))

    def open(self, hash_path: str) -> Any:
        self.page.goto(f"{self.base}/{hash_path}")
        self.page.wait_for_selector("body[data-ready='true']", timeout=30_000)
        return self.page

    def shoot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}-{self.size}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def serious_violations(self) -> list[str]:
        assert AXE.exists(), "axe-core is missing: `make test-tools` installs it (npm ci)"
        self.page.add_script_tag(path=str(AXE))
        found = self.page.evaluate("""async () => {
            const result = await axe.run(document, {resultTypes: ['violations']});
            return result.violations.filter(v => ['serious', 'critical'].includes(v.impact))
                .map(v => `${v.id} (${v.impact}): ${v.nodes.map(n => n.target.join(' ')).join(', ')}`);
        }""")
        return list(found)

    def fits(self) -> bool:
        return bool(self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))

    def external(self) -> list[str]:
        return [url for url in self.requested
                if not url.startswith(self.base) and not url.startswith(("data:", "blob:"))]


@pytest.fixture(params=list(SIZES))
def session(request: pytest.FixtureRequest, stack: Stack, browser: Any) -> Iterator[Session]:
    base, _, _ = stack
    opened = Session(browser, base, request.param)
    yield opened
    assert opened.external() == [], "the page asked another host"
    opened.context.close()


def test_predict_with_both_models_shows_labelled_probabilities(session: Session, stack: Stack) -> None:
    base, _, _ = stack
    page = session.open("#/predict")
    assert "saw only month = 7" in page.locator("#field-month").locator("xpath=..").inner_text()
    for model, field in (("crime", "crime"), ("titanic", "sex")):
        page.select_option("#predict-model", model)
        page.wait_for_selector(f"#field-{field}")
        page.click("#predict-submit")
        page.wait_for_selector(f"#predict-result .provenance:has-text('by {model} version')", timeout=30_000)
        assert "succeeded" in page.inner_text("#predict-state")
        record = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#predict-fields [name]')]
            .filter(c => c.value !== '').map(c => [c.name, c.type === 'number' ? Number(c.value) : c.value]))""")
        expected = requests.post(f"{base}/api/models/{model}/jobs?wait=20", json=record, timeout=30).json()
        result = expected["results"][0]
        values = page.locator("#predict-result .value").all_inner_texts()
        schema = requests.get(f"{base}/api/models/{model}", timeout=10).json()["schema"]
        assert values == [f"{result[o] * 100:.1f}%" for o in schema["outputs"]]
        assert page.inner_text("#predict-result .verdict") == f"Predicted: {result['label']}"
        assert f"version {expected['version']}" in page.inner_text("#predict-result .provenance")
        # Why: each field's contribution, drawn and in a table, adding up to the probability shown.
        explained = requests.post(f"{base}/api/models/{model}/jobs?wait=20&explain=true", json=record,
                                  timeout=30).json()["results"][0]["explanation"]
        last = schema["outputs"][-1]
        rows = page.locator("#predict-result .explanation tbody tr").all_inner_texts()
        assert len(rows) == len(schema["fields"]) == page.locator("#predict-result .contribution-row").count()
        largest = max(explained["contributions"][last].items(), key=lambda kv: abs(kv[1]))
        assert rows[0].split("\t")[0] == largest[0]
        assert f"{abs(largest[1]) * 100:.1f} pts" in rows[0]
        session.shoot(f"predict-{model}")
    assert session.serious_violations() == []
    assert session.fits()


def test_an_invalid_value_shows_the_apis_error_at_its_field(session: Session) -> None:
    page = session.open("#/predict")
    page.select_option("#predict-model", "titanic")
    page.wait_for_selector("#field-age")
    page.fill("#field-age", "500")
    page.click("#predict-submit")
    page.wait_for_selector("#field-age-error:not([hidden])", timeout=15_000)
    message = page.inner_text("#field-age-error")
    assert "age" in message and "100" in message
    assert page.get_attribute("#field-age", "aria-invalid") == "true"
    assert page.locator(".field .error:not([hidden])").count() == 1  # only the field at fault
    session.shoot("predict-field-error")
    assert session.serious_violations() == []


def test_a_parquet_file_is_uploaded_followed_to_100_percent_and_downloaded(
        session: Session, stack: Stack, tmp_path: Path) -> None:
    _, settings, _ = stack
    table = crime_table(Registry.from_settings(settings), 30_000, bad=False)
    source = tmp_path / "crimes.parquet"
    pq.write_table(table, source, row_group_size=5_000)
    page = session.open("#/batch")
    page.select_option("#batch-model", "crime")
    page.set_input_files("#batch-file", str(source))
    page.click("#batch-submit")
    page.wait_for_selector("#batch-state:has-text('running'), #batch-state:has-text('succeeded')", timeout=30_000)
    page.wait_for_selector("#batch-download:not([hidden])", timeout=60_000)
    assert page.get_attribute("#batch-progress", "value") == "100"
    figures = page.inner_text("#batch-figures")
    assert "30,000 of 30,000" in figures and "rows/s" in figures
    session.shoot("batch-progress")
    with page.expect_download() as waiting:
        page.click("#batch-download")
    scored = pq.read_table(io.BytesIO(Path(waiting.value.path()).read_bytes()))
    assert scored.num_rows == 30_000 and "caughtProb" in scored.column_names
    assert session.serious_violations() == []
    assert session.fits()


def test_the_models_page_shows_versions_metrics_aliases_and_history(session: Session, stack: Stack) -> None:
    base, _, _ = stack
    page = session.open("#/models")
    page.wait_for_selector("#model-crime", timeout=30_000)
    text = page.inner_text("#models-list")
    crime = requests.get(f"{base}/api/models/crime", timeout=10).json()
    assert f"production → version {crime['aliases']['production']}" in text
    assert f"{crime['versions'][0]['metrics']['log_loss']:.4f}" in text
    assert "Alias history of crime" in text or "No alias moves yet" in text
    importance = crime["versions"][-1]["importance"]
    top = max(importance, key=importance.get)  # global importance: the largest is shown first
    assert "Importance (top 3)" in text and top in page.inner_text("#model-crime ~ .table-wrap")
    assert "Retrain runs" in text or "retrain runs" in text.lower()
    session.shoot("models")
    assert session.serious_violations() == []
    assert session.fits()


@pytest.fixture(scope="module")
def monitored(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two looks of the monitor at crime's traffic, five minutes apart: jobs scored by the stack's worker,
    captured (the capture writer, with its clock at each look), outcomes posted to the gateway for some of
    them, and the monitor's result of each look saved as the monitor flow saves it. Returns the latest."""
    import dataclasses
    import time

    from batcomputer.jobqueue.connection import redis_client
    from batcomputer.monitoring.capture import Capture
    from batcomputer.monitoring.monitor import watch
    from batcomputer.monitoring.outcomes import OutcomeStore
    from batcomputer.monitoring.store import MonitorStore

    base, settings, _ = stack
    root = tmp_path_factory.mktemp("monitored") / "capture"
    own = dataclasses.replace(settings, capture_root=str(root))
    registry = Registry.from_settings(own)
    bundle = registry.bundle("crime", None, pipeline=True)
    fields = bundle.schema.field_names
    first = time.time() - 600
    latest: dict[str, Any] = {}
    for look, seed in ((0, 3), (1, 4)):
        rows = crime_table(registry, 400, seed=seed, bad=False).select(fields).to_pylist()
        job = requests.post(f"{base}/api/models/crime/jobs?wait=30", json={"records": rows}, timeout=60).json()
        assert job["state"] == "succeeded", job
        capture = Capture(str(root), clock=lambda look=look: first + look * 300)
        capture.add(bundle, "job", [job["id"]] * len(rows), list(range(len(rows))), rows, job["results"])
        assert capture.flush(force=True) == len(rows)
        labels = bundle.schema.labels
        outcomes = [{"job": job["id"], "index": i, "label": result["label"] if i % 4 == 0 else
                     labels[1 - labels.index(result["label"])]}  # for every other record: half right, half wrong
                    for i, result in enumerate(job["results"]) if i % 2 == 0]
        posted = requests.post(f"{base}/api/models/crime/outcomes", json={"outcomes": outcomes}, timeout=30)
        assert posted.status_code == 200, posted.text
        latest = watch(own, registry, "crime", now=first + look * 300 + 10,
                       outcomes=OutcomeStore(redis_client(own), own.key_prefix))
        MonitorStore(redis_client(own), own.key_prefix).save(latest)
    return latest


def test_the_monitoring_page_plots_drift_over_time_quality_and_calibration(session: Session,
                                                                           monitored: dict[str, Any]) -> None:
    page = session.open("#/monitoring")
    page.select_option("#monitoring-model", "crime")
    page.wait_for_selector("#monitoring-state", timeout=30_000)
    seen = monitored["windows"]["hour"]
    version = max(seen, key=int)
    fields = [f["field"] for f in seen[version]["fields"]]
    # one line per field over the two looks, and the thresholds
    lines = page.eval_on_selector_all("#monitoring-drift svg.plot polyline.series",
                                      "nodes => nodes.map(n => n.dataset.name)")
    assert sorted(lines) == sorted(fields)
    assert page.locator("#monitoring-drift line.threshold").count() == 2
    text = page.inner_text("#monitoring-body")
    assert f"State: {monitored['state']}" in text
    for drift in seen[version]["fields"]:
        assert f"{drift['psi']:.4f}" in text  # the table beside the plot
    quality = seen[version]["quality"]
    assert quality["records"] == 400 and f"{quality['log_loss']:.4f}" in text  # both looks are in the last hour
    assert f"{quality['calibration']['error']:.4f}" in text
    dots = page.locator("#monitoring-quality circle.dot[data-name='observed rate']").count()
    assert dots == len(quality["calibration"]["bins"]) > 0
    session.shoot("monitoring")
    assert session.serious_violations() == []
    assert session.fits()
