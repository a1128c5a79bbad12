"""Fuzzing from the service's own OpenAPI schema (schemathesis), in-process, at a CI size.

The same fuzzing as ``python -m bench.fuzz`` (which runs it bigger, against a real uvicorn
process, and commits ``bench/results/fuzz.json``): every operation, positive and negative
cases from a fixed seed, with valid keys so that the authenticated routes are exercised past
authentication; plus the hand-written catalogue. No answer may be a 5xx, every error answer is
the JSON error body, and nothing is logged as an error.
"""

from __future__ import annotations

import logging

import pytest

# Imported at collection, not lazily deep inside the test: on a fresh venv pytest's assertion
# rewriter parses schemathesis's modules when they are first imported, and parsing its
# jsonschema strategy module deep in a test's stack (hypothesis raises the recursion limit
# there) hits a CPython 3.11 bug: SystemError "AST constructor recursion depth mismatch".
import schemathesis.specs.openapi.schemas  # noqa: F401
from fastapi.testclient import TestClient

from bench.fuzz import SEED, make_job, run_catalogue, run_schema_fuzz, service_settings
from service.app import create_app
from service.settings import ServiceSettings

EXAMPLES = 6  # per operation and mode: about 400 schema cases, well under a minute


@pytest.fixture(scope="module")
def fuzz_client(datastore_root, tiny_model_dir, tmp_path_factory):
    from tests.service.conftest import wait_ready

    work = tmp_path_factory.mktemp("fuzz")
    values = service_settings(datastore_root, tiny_model_dir, work, read_timeout_s=5.0)
    with TestClient(create_app(ServiceSettings(**values))) as client:
        wait_ready(client)
        yield client, "admin_key_sha256" in values


def test_schema_fuzzing_finds_no_5xx(fuzz_client, caplog):
    client, admin = fuzz_client
    caplog.set_level(logging.WARNING)
    spec = client.get("/openapi.json").json()
    tally = run_schema_fuzz(
        client, spec, examples=EXAMPLES, seed=SEED, job_id=make_job(client), admin=admin
    )
    report = tally.report()
    assert report["requests"] >= 200, report
    assert report["5xx"] == 0 and report["problems"] == 0, report["problem_examples"]
    # Past authentication: generated requests reached validation and the routes.
    assert {"200", "404", "422"} <= set(report["status_counts"]), report["status_counts"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


def test_catalogue_in_process(fuzz_client, caplog):
    client, _ = fuzz_client
    caplog.set_level(logging.WARNING)
    report = run_catalogue(client).report()
    assert report["5xx"] == 0 and report["problems"] == 0, report["problem_examples"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
