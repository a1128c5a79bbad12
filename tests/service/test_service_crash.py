"""A real service process killed with SIGKILL mid-job: after a restart the job resumes (from its
saved target features when they were computed, else from scratch) and its result is the one an
uninterrupted run gives, byte for byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.launcher import free_port
from tests.service.conftest import KEYS, TARGETS, make_settings

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90
WAIT_S = 60
HEADERS = {"Authorization": f"Bearer {KEYS['alpha']}"}
X = {"targets": TARGETS, "k": 5}  # 3 targets; killed in its search
Y = {"targets": TARGETS[:1], "k": 4}  # 1 target; killed in its gradients


class Server:
    """``python -m tests.service.fault_server`` on a free port, killed with SIGKILL."""

    def __init__(self, workdir: Path, name: str, faults: dict):
        self.log_path = workdir / f"{name}.log"
        self.calls_path = workdir / f"{name}.calls"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "LESS_TEST_FAULTS": json.dumps({**faults, "calls_file": str(self.calls_path)}),
        }
        cmd = [sys.executable, "-m", "tests.service.fault_server", "--config"]
        cmd += [str(workdir / "service.json"), "--port", str(port), "--log-level", "info"]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text()

    def calls(self) -> list[list[int]]:
        if not self.calls_path.is_file():
            return []
        return [json.loads(line) for line in self.calls_path.read_text().splitlines()]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def create(self, body: dict) -> str:
        response = httpx.post(
            f"{self.url}/v1/datastores/tiny/jobs", headers=HEADERS, json=body, timeout=30
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        return httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=HEADERS, timeout=30).json()

    def result(self, job_id: str) -> bytes:
        response = httpx.get(f"{self.url}/v1/jobs/{job_id}/result", headers=HEADERS, timeout=30)
        assert response.status_code == 200, response.text
        return response.content

    def wait(self, condition, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not condition():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"{what}; log:\n{self.log()}"
            time.sleep(0.05)

    def finished(self, job_id: str) -> dict:
        self.wait(lambda: self.job(job_id)["status"] in ("succeeded", "failed"), job_id)
        return self.job(job_id)


@pytest.fixture
def workdir(tmp_path, datastore_root, tiny_model_dir) -> Path:
    settings = make_settings(
        datastore_root, tiny_model_dir, tmp_path / "jobs", reload_interval_s=0, cache_size=0
    )
    (tmp_path / "service.json").write_text(json.dumps(settings.model_dump(mode="json")))
    return tmp_path


def test_jobs_killed_mid_run_resume_after_restart_with_identical_results(workdir):
    features_of = lambda job_id: workdir / "jobs" / "state" / f"{job_id}.pt"  # noqa: E731

    # 1. Killed in X's search, after its target gradients were computed and saved.
    first = Server(workdir, "first", {"hang_search_k": X["k"]})
    try:
        x = first.create(X)
        y = first.create(Y)  # queued behind X
        first.wait(lambda: first.job(x)["progress"] == 0.5, "X's gradients")
        first.wait(features_of(x).is_file, "X's saved features")
        assert first.job(x)["status"] == "running" and first.job(y)["status"] == "queued"
    finally:
        first.kill()

    # 2. X resumes from its saved features (no gradients computed for its 3 targets) and
    #    succeeds; then killed in Y's gradients.
    second = Server(workdir, "second", {"hang_gradients_n": len(Y["targets"])})
    try:
        done = second.finished(x)
        assert done["status"] == "succeeded" and done["n_selected"] == X["k"], done
        x_result = second.result(x)
        second.wait(lambda: [len(Y["targets"])] in second.calls(), "Y's gradients")
        assert second.job(y)["status"] == "running"
        assert all(len(X["targets"]) not in sizes for sizes in second.calls()), second.calls()
        assert f"job {x} resumed from its saved target features" in second.log()
        assert not features_of(x).exists()  # dropped once the result was written
    finally:
        second.kill()

    # 3. Y is re-run from scratch; both results equal uninterrupted runs byte for byte.
    third = Server(workdir, "third", {})
    try:
        done = third.finished(y)
        assert done["status"] == "succeeded" and done["n_selected"] == Y["k"], done
        assert "re-queued 1 job(s)" in third.log()
        assert third.result(x) == x_result  # still retrievable after the restart
        y_result = third.result(y)
        fresh_x, fresh_y = third.create(X), third.create(Y)
        assert third.finished(fresh_x)["status"] == "succeeded"
        assert third.finished(fresh_y)["status"] == "succeeded"
        assert third.result(fresh_x) == x_result
        assert third.result(fresh_y) == y_result
        assert len(x_result.splitlines()) == X["k"] and len(y_result.splitlines()) == Y["k"]
    finally:
        third.kill()
