"""Batch files belong to their key in the production profile: a score key reads and writes only its own folder
(tenants/<key id> in every root) and the prefixes an admin granted it; an output that exists is replaced only when
its key asks, never when another key's batch writes it. (The probe of issue 30 found any key reading another's
secret columns and replacing another's output.)"""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flask.testing import FlaskClient

from api.app import create_app
from batcomputer.settings import Settings
from tests.conftest import Services, remove_keys, run_cli, settings_env
from tests.integration.api.test_auth import bearer, create_key, owner

PARQUET = "application/vnd.apache.parquet"
Tenants = tuple[FlaskClient, Settings, dict[str, str], Path]


def crimes(rows: int = 3) -> bytes:
    table = pa.table({"force": ["West Yorkshire Police"] * rows, "crime": ["Burglary"] * rows,
                      "month": list(range(1, rows + 1)), "customer_ssn": ["123-45-6789"] * rows})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@pytest.fixture
def tenants(stack: tuple[str, Settings, Services], tmp_path: Path, redis_base_url: str) -> Iterator[Tenants]:
    _, base, _ = stack
    root = tmp_path / "batches"
    settings = dataclasses.replace(base, profile="production", keys_file=str(tmp_path / "keys.json"),
                                   storage_roots=str(root), key_prefix=f"bct-{uuid.uuid4().hex[:10]}:")
    keys = {name: create_key(settings, name, "score") for name in ("victim", "other")}
    keys["ops"] = create_key(settings, "ops", "admin")
    try:
        yield create_app(settings).test_client(), settings, keys, root
    finally:
        remove_keys(redis_base_url, settings.key_prefix)


def place(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_uploads_and_named_outputs_live_in_the_keys_own_folder_and_no_server_path_is_shown(
        tenants: Tenants) -> None:
    client, settings, keys, root = tenants
    uploaded = client.post("/api/models/crime/batches", data=crimes(), content_type=PARQUET,
                           headers=bearer(keys["victim"]))
    assert uploaded.status_code == 202, uploaded.get_json()
    job = uploaded.get_json()
    folder = root / "tenants" / owner("victim", keys["victim"])
    assert (folder / "uploads" / f"{job['id']}.parquet").is_file()
    assert job["input"] == "upload" and job["output"] == f"/api/jobs/{job['id']}/output"
    shown = [uploaded.get_data(as_text=True), client.get(f"/api/jobs/{job['id']}", headers=bearer(keys["victim"]))
             .get_data(as_text=True), client.get("/readyz").get_data(as_text=True)]
    for text in shown:  # nothing a client sees says where the server keeps its files
        assert str(root) not in text and str(Path(settings.registry).resolve()) not in text
        assert settings.registry not in text


def test_a_key_cannot_read_or_write_another_keys_files(tenants: Tenants) -> None:
    client, _, keys, root = tenants
    victims, others = (root / "tenants" / owner(name, keys[name]) for name in ("victim", "other"))
    secret = place(victims / "secret.parquet", crimes())
    stolen = client.post("/api/models/crime/batches", headers=bearer(keys["other"]),
                         json={"input_uri": secret, "columns": ["customer_ssn"]})
    assert stolen.status_code == 403, stolen.get_json()
    problem = stolen.get_json()
    assert problem["code"] == "storage_forbidden" and problem["field"] == "input_uri"
    assert problem["allowed"] == [str(others)]
    own = place(others / "in.parquet", crimes())
    into_victims = client.post("/api/models/crime/batches", headers=bearer(keys["other"]),
                               json={"input_uri": own, "output_uri": str(victims / "scored.parquet")})
    assert into_victims.status_code == 403 and into_victims.get_json()["field"] == "output_uri"
    shared = place(root / "in" / "crimes.parquet", crimes())  # a root's shared folder: granted, never implied
    assert client.post("/api/models/crime/batches", headers=bearer(keys["victim"]),
                       json={"input_uri": shared}).status_code == 403
    assert client.post("/api/models/crime/batches", headers=bearer(keys["other"]),
                       json={"input_uri": own}).status_code == 202
    assert client.post("/api/models/crime/batches", headers=bearer(keys["ops"]),  # admins are not confined
                       json={"input_uri": shared}).status_code == 202


def test_an_admin_grants_a_shared_prefix_and_outputs_there_keep_their_writer(tenants: Tenants) -> None:
    client, settings, keys, root = tenants
    shared = root / "shared"
    source = place(shared / "in.parquet", crimes())
    for name in ("victim", "other"):
        done = run_cli(settings_env(settings), "keys", "grant", name, str(shared))
        assert done.returncode == 0, done.stderr
    output = str(shared / "scored.parquet")
    first = client.post("/api/models/crime/batches", headers=bearer(keys["victim"]),
                        json={"input_uri": source, "output_uri": output})
    assert first.status_code == 202, first.get_json()
    for overwrite in ("", "?overwrite=true"):  # the victim's output is the victim's, whatever the other asks
        taken = client.post(f"/api/models/crime/batches{overwrite}", headers=bearer(keys["other"]),
                            json={"input_uri": source, "output_uri": output})
        assert taken.status_code == 409 and "another key" in taken.get_json()["detail"]
    place(Path(output), crimes())  # the victim's batch wrote it
    again = client.post("/api/models/crime/batches", headers=bearer(keys["victim"]),
                        json={"input_uri": source, "output_uri": output})
    assert again.status_code == 409 and "overwrite=true" in again.get_json()["detail"]
    assert client.post("/api/models/crime/batches?overwrite=true", headers=bearer(keys["victim"]),
                       json={"input_uri": source, "output_uri": output}).status_code == 202
    withdrawn = run_cli(settings_env(settings), "keys", "grant", "other", str(shared), "--withdraw")
    assert withdrawn.returncode == 0
    assert client.post("/api/models/crime/batches", headers=bearer(keys["other"]),
                       json={"input_uri": source}).status_code == 403
    outside = run_cli(settings_env(settings), "keys", "grant", "other", "/etc")
    assert outside.returncode != 0 and "outside the storage roots" in outside.stderr
