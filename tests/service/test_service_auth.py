"""Keys and isolation: constant-time key lookup, no secrets in logs, every route walked with
no key, a wrong key, another team's key and the wrong kind of key; bounded metrics labels;
readiness without details for the public; job polling on its own rate-limit bucket."""

from __future__ import annotations

import logging
import random
import re
import string
import time

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Route

import service.auth as auth_module
from service.access import key_id
from service.app import create_app
from service.auth import AdminKeys, KeyRing
from service.settings import TeamConfig, hash_key
from tests.service.conftest import (
    JOB_TIMEOUT_S,
    KEYS,
    TARGETS,
    auth,
    make_settings,
    wait_job,
    wait_ready,
)

ADMIN_KEY = "admin-key-for-tests"

# The web page's and the docs' files (service/routes/ui.py), with a file each serves.
PUBLIC_FILES = {"/ui/static/{filename}": "app.js", "/docs/assets/{filename}": "swagger-ui.css"}
# The routes anyone may call. Everything else in the route table needs a key.
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/ui",
    *PUBLIC_FILES,
}


def admin_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def app_client(datastore_root, tiny_model_dir, tmp_path_factory):
    settings = make_settings(
        datastore_root,
        tiny_model_dir,
        tmp_path_factory.mktemp("auth-jobs"),
        admin_key_sha256=[hash_key(ADMIN_KEY)],
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def alpha_job(app_client) -> str:
    created = app_client.post(
        "/v1/datastores/tiny/jobs", headers=auth("alpha"), json={"targets": TARGETS, "k": 3}
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert wait_job(app_client, job_id)["status"] == "succeeded"
    return job_id


# -- 1. keys: hashed, compared in constant time, never logged ---------------------------------


def test_key_lookup_compares_every_digest(monkeypatch):
    teams = {
        f"team{i}": TeamConfig(key_sha256=[hash_key(f"key{i}a"), hash_key(f"key{i}b")])
        for i in range(4)
    }
    ring = KeyRing(teams)
    calls = []
    real = auth_module.hmac.compare_digest

    def counting(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    for key, team in [("key0a", "team0"), ("key3b", "team3"), ("key2a", "team2"), ("nope", None)]:
        calls.clear()
        if team is None:
            with pytest.raises(auth_module.ServiceError):
                ring.team_for(f"Bearer {key}")
        else:
            assert ring.team_for(f"Bearer {key}").name == team
        # No early exit: the first key costs as many comparisons as the last or an unknown one.
        assert len(calls) == 8, key

    admins = AdminKeys([hash_key("a1"), hash_key("a2"), hash_key("a3")])
    for key in ("a1", "a3", "wrong"):
        calls.clear()
        admins.is_admin(f"Bearer {key}")
        assert len(calls) == 3


def test_no_key_target_text_or_selection_in_logs(datastore_root, tiny_model_dir, tmp_path, caplog):
    secret_key = "sk-" + "".join(random.choices(string.ascii_letters, k=24))
    marker = "Zq" + "".join(random.choices(string.ascii_lowercase, k=8))
    targets = [{"prompt": f"{marker} = ", "completion": marker}]
    settings = make_settings(datastore_root, tiny_model_dir, tmp_path)
    teams = {
        **settings.teams,
        "gamma": TeamConfig(key_sha256=[hash_key(secret_key)], datastores=["tiny"]),
    }
    settings = settings.model_copy(update={"teams": teams})
    headers = {"Authorization": f"Bearer {secret_key}"}
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        selected = client.post(
            "/v1/datastores/tiny/select", headers=headers, json={"targets": targets, "k": 5}
        )
        assert selected.status_code == 200, selected.text
        job = client.post(
            "/v1/datastores/tiny/jobs", headers=headers, json={"targets": targets, "k": 5}
        ).json()
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while client.get(f"/v1/jobs/{job['id']}", headers=headers).json()["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        result = client.get(f"/v1/jobs/{job['id']}/result", headers=headers)
        assert result.status_code == 200
        # A refused request (a target over the token limit) with the text in it, too.
        too_long = [{"prompt": marker * 20, "completion": marker}]
        refused = client.post(
            "/v1/datastores/tiny/select", headers=headers, json={"targets": too_long, "k": 2}
        )
        assert refused.status_code == 400
    ids = [s["id"] for s in selected.json()["selected"]]
    text = caplog.text
    assert caplog.records, "nothing was logged at all: the check would be vacuous"
    assert secret_key not in text and hash_key(secret_key) not in text
    assert marker not in text
    assert not [i for i in ids if re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", text)], ids


# -- 2. every route, every kind of wrong caller ----------------------------------------------


def _bodies(datastore_root, tiny_model_dir) -> dict[tuple[str, str], dict]:
    """A valid body for each route that takes one (a new such route must be added here)."""
    select = {"targets": TARGETS, "k": 2}
    return {
        ("POST", "/v1/datastores/{name}/select"): select,
        ("POST", "/v1/datastores/{name}/jobs"): select,
        ("POST", "/v1/admin/datastores"): {
            "name": "walk-new",
            "path": str(datastore_root),
            "model_dir": str(tiny_model_dir),
        },
        ("POST", "/v1/admin/teams"): {"name": "walk-team", "datastores": ["tiny"]},
    }


def _routes(app) -> list[tuple[str, str, BaseRoute]]:
    """(method, full path template, route) of every route in ``app.routes``, included
    routers expanded."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        assert isinstance(route, Route), f"unexpected route type {type(route)}: walk it too"
        assert context.path, route
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                found.append((method, context.path, route))
    return found


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _is_error(response, status: int, code: str) -> None:
    assert response.status_code == status, (response.request.method, response.request.url)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body


def test_every_route_refuses_callers_without_the_right_key(
    app_client, alpha_job, datastore_root, tiny_model_dir
):
    client = app_client
    bodies = _bodies(datastore_root, tiny_model_dir)
    alpha_kid = key_id(hash_key(KEYS["alpha"]))
    mine = {"name": "tiny", "job_id": alpha_job, "team": "alpha", "key_id": alpha_kid}
    missing = {"name": "zz-missing", "job_id": "f" * 32, "team": "zz-team", "key_id": "0" * 12}
    routes = _routes(client.app)
    assert {p for _, p, _ in routes} >= PUBLIC
    walked = 0
    for method, template, route in routes:
        if template in PUBLIC:
            continue
        body = None
        if isinstance(route, APIRoute) and route.body_field is not None:
            assert (method, template) in bodies, f"add a valid body for {method} {template}"
            body = bodies[(method, template)]
        is_admin_route = template.startswith("/v1/admin")
        wrong_kind = [auth("alpha"), auth("beta")] if is_admin_route else [admin_auth()]
        callers = [
            {},
            {"Authorization": "Bearer wrong-key"},
            {"Authorization": f"Basic {KEYS['alpha']}"},
            {"Authorization": "Bearer"},
            *wrong_kind,
        ]
        for headers in callers:
            answers = [
                client.request(method, _fill(template, values), headers=headers, json=body)
                for values in (mine, missing)
            ]
            for answer in answers:
                _is_error(answer, 401, "unauthorized")
            # No hint that the resource exists: the same answer for it and for a missing one.
            assert answers[0].json() == answers[1].json(), (method, template, headers)
        walked += 1

        params = set(re.findall(r"\{(\w+)\}", template))
        if is_admin_route or not params:
            continue
        # Another team's key on this team's datastore / job: exactly what a missing one gets.
        theirs = client.request(method, _fill(template, mine), headers=auth("beta"), json=body)
        absent = client.request(method, _fill(template, missing), headers=auth("beta"), json=body)
        _is_error(theirs, 404, "not_found")
        _is_error(absent, 404, "not_found")
        same = theirs.text
        for param in params:
            same = same.replace(mine[param], missing[param])
        assert same == absent.text, (theirs.text, absent.text)
        # ...while the owner gets an answer (the walk does hit real resources).
        if method == "GET":
            assert client.get(_fill(template, mine), headers=auth("alpha")).status_code == 200
    assert walked >= 15, walked

    # Routes without a resource in the path answer with the caller's own things only.
    listing = client.get("/v1/datastores", headers=auth("beta")).json()
    assert [d["name"] for d in listing["datastores"]] == ["other"]
    # Public routes need no key.
    for path in PUBLIC:
        assert client.get(_fill(path, {"filename": PUBLIC_FILES.get(path, "")})).status_code == 200


# -- 4. bounded metrics, readiness without details -------------------------------------------


def _series(text: str) -> list[str]:
    return sorted(line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#"))


def test_metrics_labels_stay_bounded(app_client):
    client = app_client
    rng = random.Random(7)

    def noise():
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
        path = "/" + "".join(rng.choices(string.ascii_letters + string.digits + "-_.", k=20))
        return client.request(method, f"/zz{path}")

    for _ in range(3):  # warm-up: the series these requests need exist afterwards
        noise()
        client.get("/metrics")
    before = client.get("/metrics").text
    for _ in range(50):
        noise()
    after = client.get("/metrics").text
    assert _series(after) == _series(before)
    assert len(after) - len(before) < 200, (len(before), len(after))
    assert 'method="other"' in after and 'route="unmatched"' in after


def test_readyz_public_answer_has_no_details(app_client):
    public = app_client.get("/readyz")
    assert public.status_code == 200 and public.json() == {"ready": True}
    for headers in (auth("alpha"), {"Authorization": "Bearer wrong"}):
        assert app_client.get("/readyz", headers=headers).json() == {"ready": True}
    detail = app_client.get("/readyz", headers=admin_auth()).json()
    assert detail == {
        "ready": True,
        "status": "ready",
        "datastores": {"other": "ready", "tiny": "ready"},
    }


def test_one_failed_datastore_does_not_hold_readiness(datastore_root, tiny_model_dir, tmp_path):
    settings = make_settings(
        datastore_root, tiny_model_dir, tmp_path, admin_key_sha256=[hash_key(ADMIN_KEY)]
    )
    broken_root = tmp_path / "secret-place" / "broken"
    datastores = {
        **settings.datastores,
        "broken": settings.datastores["tiny"].model_copy(update={"path": broken_root}),
    }
    settings = settings.model_copy(update={"datastores": datastores, "jobs_dir": tmp_path})
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        public = client.get("/readyz")
        assert public.status_code == 200 and public.json() == {"ready": True}
        assert "secret-place" not in public.text and "broken" not in public.text
        detail = client.get("/readyz", headers=admin_auth()).json()
        assert detail["ready"] is True and detail["status"] == "degraded"
        assert detail["datastores"]["tiny"] == "ready"
        assert detail["datastores"]["broken"].startswith("failed:")
        ok = client.post(
            "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, "k": 2}
        )
        assert ok.status_code == 200


# -- 5. job polling does not spend rate-limit tokens -----------------------------------------


def test_job_polling_has_its_own_bucket(datastore_root, tiny_model_dir, tmp_path):
    # Team "slow": one token, one per second. Polling: 5 tokens, one per second.
    settings = make_settings(
        datastore_root, tiny_model_dir, tmp_path, poll_burst=5, poll_rate_per_minute=60
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        created = client.post(
            "/v1/datastores/tiny/jobs", headers=auth("slow"), json={"targets": TARGETS, "k": 2}
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        polls = [client.get(f"/v1/jobs/{job_id}", headers=auth("slow")) for _ in range(5)]
        assert [p.status_code for p in polls] == [200] * 5
        # The polling bucket has its own limit, with Retry-After...
        limited = client.get(f"/v1/jobs/{job_id}", headers=auth("slow"))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "polling" in limited.json()["error"]["message"]
        # ...and the team's own token refilled untouched by the polls.
        time.sleep(1.1)
        assert client.get("/v1/datastores", headers=auth("slow")).status_code == 200
