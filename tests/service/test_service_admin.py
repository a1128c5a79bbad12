"""The admin API: datastores, teams, grants and keys changed at run time and persisted in the
state file (merged over the configuration at start); teams rotating their own key."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

import service.access as access_module
from less_core.errors import ConfigError
from service.access import AdminState, key_id, load_state, merge
from service.app import create_app
from service.settings import DatastoreConfig, TeamConfig, hash_key
from tests.service.conftest import KEYS, TARGETS, auth, make_settings, wait_ready

ADMIN_KEY = "admin-key-for-tests"
LOAD_TIMEOUT_S = 60


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settings_for(datastore_root, tiny_model_dir, jobs_dir, **overrides):
    return make_settings(
        datastore_root,
        tiny_model_dir,
        jobs_dir,
        admin_key_sha256=[hash_key(ADMIN_KEY)],
        **overrides,
    )


def wait_datastore(client: TestClient, name: str) -> dict:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        body = client.get(f"/v1/admin/datastores/{name}", headers=admin()).json()
        if body["state"] != "loading":
            return body
        time.sleep(0.05)
    raise TimeoutError(f"datastore {name} still loading after {LOAD_TIMEOUT_S} s")


def names(client: TestClient, headers: dict[str, str]) -> list[str]:
    response = client.get("/v1/datastores", headers=headers)
    assert response.status_code == 200, response.text
    return [d["name"] for d in response.json()["datastores"]]


@pytest.fixture(scope="module")
def admin_client(datastore_root, tiny_model_dir, tmp_path_factory):
    jobs_dir = tmp_path_factory.mktemp("admin-jobs")
    with TestClient(create_app(settings_for(datastore_root, tiny_model_dir, jobs_dir))) as client:
        wait_ready(client)
        yield client


def state_text(client: TestClient) -> str:
    return client.app.state.services.settings.resolved_state_file.read_text()


def test_admin_and_team_keys_do_not_cross(admin_client):
    client = admin_client
    for team in ("alpha", "beta"):
        response = client.get("/v1/admin/teams", headers=auth(team))
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/datastores", headers=admin()).status_code == 401
    assert client.post("/v1/keys/rotate", headers=admin()).status_code == 401
    assert client.get("/v1/admin/teams", headers=admin()).status_code == 200


def test_no_admin_key_configured_means_no_admin_api(datastore_root, tiny_model_dir, tmp_path):
    with TestClient(create_app(make_settings(datastore_root, tiny_model_dir, tmp_path))) as client:
        wait_ready(client)
        assert client.get("/v1/admin/teams", headers=admin()).status_code == 401
        assert client.get("/v1/admin/teams", headers=auth("alpha")).status_code == 401


def test_team_grants_and_keys(admin_client):
    client = admin_client
    created = client.post("/v1/admin/teams", headers=admin(), json={"name": "delta"})
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["team"] == "delta" and first["key_id"] == key_id(hash_key(first["key"]))
    assert names(client, bearer(first["key"])) == []
    again = client.post("/v1/admin/teams", headers=admin(), json={"name": "delta"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    # Grants: idempotent, of existing datastores only, effective at once.
    for _ in range(2):
        granted = client.put("/v1/admin/teams/delta/datastores/tiny", headers=admin())
        assert granted.status_code == 200 and granted.json()["datastores"] == ["tiny"]
    client.put("/v1/admin/teams/delta/datastores/other", headers=admin())
    assert names(client, bearer(first["key"])) == ["tiny", "other"]
    unknown = client.put("/v1/admin/teams/delta/datastores/nope", headers=admin())
    assert unknown.status_code == 404
    assert client.delete("/v1/admin/teams/delta/datastores/tiny", headers=admin()).json()[
        "datastores"
    ] == ["other"]
    revoked = client.post(
        "/v1/datastores/tiny/select", headers=bearer(first["key"]), json={"targets": TARGETS}
    )
    assert revoked.status_code == 404

    # Keys: a second one, then the first revoked; never the last one.
    second = client.post("/v1/admin/teams/delta/keys", headers=admin()).json()
    assert names(client, bearer(second["key"])) == ["other"]
    team = client.delete(f"/v1/admin/teams/delta/keys/{first['key_id']}", headers=admin())
    assert team.status_code == 200 and team.json()["key_ids"] == [second["key_id"]]
    assert client.get("/v1/datastores", headers=bearer(first["key"])).status_code == 401
    last = client.delete(f"/v1/admin/teams/delta/keys/{second['key_id']}", headers=admin())
    assert last.status_code == 409

    # The admin sees key ids, never keys; the state file holds digests only.
    listing = client.get("/v1/admin/teams", headers=admin())
    delta = next(t for t in listing.json()["teams"] if t["name"] == "delta")
    assert delta["source"] == "state" and delta["key_ids"] == [second["key_id"]]
    for key in (first["key"], second["key"]):
        assert key not in listing.text and key not in state_text(client)
    assert hash_key(second["key"]) in state_text(client)

    assert client.delete("/v1/admin/teams/delta", headers=admin()).status_code == 204
    assert client.get("/v1/datastores", headers=bearer(second["key"])).status_code == 401
    assert client.get("/v1/admin/teams/delta", headers=admin()).status_code == 404


def test_bad_admin_bodies(admin_client):
    client = admin_client
    for body in (
        {"name": "../up", "path": "/x", "model_dir": "/y"},
        {"name": "a/b", "path": "/x", "model_dir": "/y"},
        {"name": "ok", "path": "/x"},
        {"name": "ok", "path": "/x", "model_dir": "/y", "extra": 1},
    ):
        response = client.post("/v1/admin/datastores", headers=admin(), json=body)
        assert response.status_code == 422, (body, response.text)
    assert client.post("/v1/admin/teams", headers=admin(), json={"name": ""}).status_code == 422
    grant = client.post(
        "/v1/admin/teams", headers=admin(), json={"name": "eps", "datastores": ["nope"]}
    )
    assert grant.status_code == 404
    assert client.delete("/v1/admin/datastores/nope", headers=admin()).status_code == 404


def test_rotate_own_key(admin_client):
    client = admin_client
    issued = client.post(
        "/v1/admin/teams", headers=admin(), json={"name": "zeta", "datastores": ["tiny"]}
    ).json()
    other = client.post("/v1/admin/teams/zeta/keys", headers=admin()).json()
    rotated = client.post("/v1/keys/rotate", headers=bearer(issued["key"]))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["team"] == "zeta" and new["key"] != issued["key"]
    assert new["revoked_key_id"] == issued["key_id"]
    assert client.get("/v1/datastores", headers=bearer(issued["key"])).status_code == 401
    assert names(client, bearer(new["key"])) == ["tiny"]
    assert names(client, bearer(other["key"])) == ["tiny"]  # the team's other key is untouched
    assert new["key"] not in state_text(client) and hash_key(new["key"]) in state_text(client)
    # The old key cannot rotate again.
    assert client.post("/v1/keys/rotate", headers=bearer(issued["key"])).status_code == 401


def test_datastore_added_and_removed_at_run_time(admin_client, datastore_root, tiny_model_dir):
    client = admin_client
    body = {"name": "extra", "path": str(datastore_root), "model_dir": str(tiny_model_dir)}
    added = client.post("/v1/admin/datastores", headers=admin(), json=body)
    assert added.status_code == 202, added.text
    assert added.json()["source"] == "state"
    assert client.post("/v1/admin/datastores", headers=admin(), json=body).status_code == 409
    assert wait_datastore(client, "extra")["state"] == "ready"

    select = {"targets": TARGETS, "k": 4}
    before = client.post("/v1/datastores/extra/select", headers=auth("alpha"), json=select)
    assert before.status_code == 404  # not granted yet
    client.put("/v1/admin/teams/alpha/datastores/extra", headers=admin())
    on_extra = client.post("/v1/datastores/extra/select", headers=auth("alpha"), json=select)
    on_tiny = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=select)
    assert on_extra.status_code == 200, on_extra.text
    assert on_extra.json()["selected"] == on_tiny.json()["selected"]

    assert client.delete("/v1/admin/datastores/extra", headers=admin()).status_code == 204
    gone = client.post("/v1/datastores/extra/select", headers=auth("alpha"), json=select)
    assert gone.status_code == 404
    assert names(client, auth("alpha")) == ["tiny"]
    alpha = client.get("/v1/admin/teams/alpha", headers=admin()).json()
    assert alpha["datastores"] == ["tiny"]
    assert "extra" not in [
        d["name"] for d in client.get("/v1/admin/datastores", headers=admin()).json()["datastores"]
    ]


def test_broken_datastore_added_fails_alone(admin_client, tiny_model_dir, tmp_path):
    client = admin_client
    body = {"name": "broken", "path": str(tmp_path / "nothing"), "model_dir": str(tiny_model_dir)}
    assert client.post("/v1/admin/datastores", headers=admin(), json=body).status_code == 202
    assert wait_datastore(client, "broken")["state"].startswith("failed:")
    assert client.get("/readyz").json() == {"ready": True}
    detail = client.get("/readyz", headers=admin()).json()
    assert detail["status"] == "degraded" and detail["datastores"]["broken"].startswith("failed")
    assert client.delete("/v1/admin/datastores/broken", headers=admin()).status_code == 204
    assert client.get("/readyz", headers=admin()).json()["status"] == "ready"


def test_changes_persist_across_restarts(datastore_root, tiny_model_dir, tmp_path):
    settings = settings_for(datastore_root, tiny_model_dir, tmp_path)
    extra = {"name": "extra", "path": str(datastore_root), "model_dir": str(tiny_model_dir)}
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        issued = client.post(
            "/v1/admin/teams", headers=admin(), json={"name": "omega", "datastores": ["tiny"]}
        ).json()
        client.post("/v1/admin/datastores", headers=admin(), json=extra)
        wait_datastore(client, "extra")
        client.put("/v1/admin/teams/omega/datastores/extra", headers=admin())
        assert client.delete("/v1/admin/datastores/other", headers=admin()).status_code == 204
        alpha_new = client.post("/v1/keys/rotate", headers=auth("alpha")).json()["key"]

    state = json.loads((tmp_path / "admin-state.json").read_text())
    assert state["datastores"]["other"] is None and state["teams"]["omega"]["datastores"] == [
        "tiny",
        "extra",
    ]
    assert issued["key"] not in json.dumps(state) and alpha_new not in json.dumps(state)

    # Second start: the same configuration file, plus a team added to it meanwhile.
    teams = {**settings.teams, "late": TeamConfig(key_sha256=[hash_key("late-key")])}
    restarted = settings.model_copy(update={"teams": teams})
    with TestClient(create_app(restarted)) as client:
        wait_ready(client)
        assert names(client, bearer(issued["key"])) == ["tiny", "extra"]
        assert client.get("/v1/datastores/other", headers=auth("beta")).status_code == 404
        assert names(client, auth("beta")) == []  # its only datastore was removed
        # Alpha's rotated key: the state file wins over the configured (old) key.
        assert client.get("/v1/datastores", headers=auth("alpha")).status_code == 401
        assert names(client, bearer(alpha_new)) == ["tiny"]
        # What the API never touched follows the configuration.
        assert client.get("/v1/datastores", headers=bearer("late-key")).status_code == 200
        sources = {
            d["name"]: d["source"]
            for d in client.get("/v1/admin/datastores", headers=admin()).json()["datastores"]
        }
        assert sources == {"tiny": "config", "extra": "state"}


def test_a_change_that_cannot_be_saved_changes_nothing(admin_client, monkeypatch):
    def fail(path, state):
        raise OSError("disk full")

    monkeypatch.setattr(access_module, "save_state", fail)
    response = admin_client.post("/v1/admin/teams", headers=admin(), json={"name": "lost"})
    assert response.status_code == 503 and "nothing changed" in response.json()["error"]["message"]
    assert admin_client.get("/v1/admin/teams/lost", headers=admin()).status_code == 404


def test_merge_rules(datastore_root, tiny_model_dir, tmp_path):
    settings = settings_for(datastore_root, tiny_model_dir, tmp_path)
    ds = DatastoreConfig(path=datastore_root, model_dir=tiny_model_dir)
    state = AdminState(
        datastores={"tiny": None, "new": ds},
        teams={"beta": None, "gamma": TeamConfig(key_sha256=[hash_key("g")], datastores=["tiny"])},
    )
    merged = merge(settings, state)
    assert set(merged.datastores) == {"other", "new"}
    assert set(merged.teams) == {"alpha", "slow", "gamma"}
    # Grants of a datastore removed are dropped; the jobs dir stays where the config put it.
    assert merged.teams["alpha"].datastores == [] and merged.teams["gamma"].datastores == []
    assert merged.resolved_jobs_dir == settings.resolved_jobs_dir
    clash = AdminState(teams={"gamma": TeamConfig(key_sha256=[hash_key(KEYS["alpha"])])})
    with pytest.raises(ConfigError, match="belongs to"):
        merge(settings, clash)
    admin_clash = AdminState(teams={"gamma": TeamConfig(key_sha256=[hash_key(ADMIN_KEY)])})
    with pytest.raises(ConfigError, match="the admin"):
        merge(settings, admin_clash)


def test_invalid_state_file_refuses_to_start(datastore_root, tiny_model_dir, tmp_path):
    (tmp_path / "admin-state.json").write_text('{"format": 1, "teams": {"x": {"key_sha256": []}}}')
    with pytest.raises(ConfigError, match="admin state file"):
        load_state(tmp_path / "admin-state.json")
    with pytest.raises(ConfigError):
        create_app(settings_for(datastore_root, tiny_model_dir, tmp_path))


def test_settings_refuse_an_admin_key_that_is_a_team_key(datastore_root, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="admin key is also a key of team"):
        make_settings(
            datastore_root, tiny_model_dir, tmp_path, admin_key_sha256=[hash_key(KEYS["beta"])]
        )
