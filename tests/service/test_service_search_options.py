"""Search options over HTTP: validated by the wire model, ignored by exact datastores."""

from __future__ import annotations

from tests.service.conftest import TARGETS, auth


def test_search_options_on_an_exact_datastore_give_the_exact_answer(client):
    plain = client.post(
        "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, "k": 5}
    )
    tuned = client.post(
        "/v1/datastores/tiny/select",
        headers=auth("alpha"),
        json={"targets": TARGETS, "k": 5, "search": {"nprobe": 8, "candidates": 3}},
    )
    assert plain.status_code == tuned.status_code == 200, tuned.text
    assert [s["id"] for s in plain.json()["selected"]] == [
        s["id"] for s in tuned.json()["selected"]
    ]


def test_bad_search_options_are_422_naming_the_field(client):
    for search, field in (
        ({"nprobe": 0}, "search.nprobe"),
        ({"candidates": 0.5}, "search.candidates"),
        ({"exact": "yes please"}, "search.exact"),
        ({"efsearch": 4}, "search.efsearch"),
    ):
        response = client.post(
            "/v1/datastores/tiny/select",
            headers=auth("alpha"),
            json={"targets": TARGETS, "k": 5, "search": search},
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and error["message"].startswith(field)
