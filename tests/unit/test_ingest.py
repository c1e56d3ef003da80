"""IoT request handling in the core: equal bad records of one body stay two dead letters."""

from __future__ import annotations

from sluice.edges.ingest import IotRequest, ingest_iot_request


def request(body: bytes) -> IotRequest:
    return IotRequest(body=body, content_type="application/x-ndjson")


def test_equal_bad_records_in_one_body_are_distinct_dead_letters():
    # GIVEN a body with the same bad reading twice between good ones
    body = b'{"temperature": 21.5}\n{"device_id": "d", "ts": 1}\n{"temperature": 21.5}\n'
    # WHEN it is ingested
    outcome = ingest_iot_request(request(body))
    # THEN both rejections are kept with different ids, and a retry of the same body gives the same ids
    ids = [letter.dead_letter_id for letter in outcome.dead_letters]
    assert len(ids) == 2 and len(set(ids)) == 2
    retry = ingest_iot_request(request(body))
    assert [letter.dead_letter_id for letter in retry.dead_letters] == ids
