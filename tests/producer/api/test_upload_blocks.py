"""An upload's blocks are validated several at a time (one per pool process, while the next
one is read) and staged in their order: against a real API whose blocks are 100 lines and
all validated in its pool, the last action per id still wins across blocks, and an invalid
line anywhere still refuses the whole upload, located, with nothing staged."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.conftest import start_api
from tests.producer.api.test_bad_input import nothing_accepted
from tests.support import applied_status
from worker.store import Store

pytestmark = pytest.mark.integration
NDJSON = {"Content-Type": "application/x-ndjson"}
LINES = 2_050  # 21 blocks


@pytest.fixture(scope="module")
def small_blocks_api(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, worker: object
) -> Iterator[str]:
    env = stack_env | {
        "AUDIENCES_BATCH_SIZE": "100",
        "AUDIENCES_VALIDATION_OFFLOAD_BYTES": "0",
        "AUDIENCES_VALIDATION_PROCESSES": "2",
    }
    proc, url = start_api(env, tmp_path_factory.mktemp("small-blocks") / "api.log")
    yield url
    proc.stop()


@pytest.fixture
def http(small_blocks_api: str, new_key) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    _, secret = new_key()
    with httpx.Client(
        base_url=small_blocks_api, headers={"X-API-Key": secret}, timeout=60
    ) as client:
        yield client


def ops(seed: int) -> list[dict[str, object]]:
    """Adds and removes of 300 ids, each id touched in many blocks."""
    rng = random.Random(seed)
    return [
        {"action": "add", "id": f"u{i}", "attributes": {"line": n}}
        if rng.random() < 0.6
        else {"action": "remove", "id": f"u{i}"}
        for n, i in enumerate(rng.randrange(300) for _ in range(LINES))
    ]


def test_the_last_action_per_id_wins_across_blocks_validated_at_once(http: httpx.Client) -> None:
    audience = http.post("/v1/audiences", json={"name": "blocks"}).json()["id"]
    sent = ops(1)
    body = b"".join(orjson.dumps(op) + b"\n" for op in sent)
    status = applied_status(
        http, http.post(f"/v1/audiences/{audience}/uploads", content=body, headers=NDJSON)
    )
    assert status["counts"]["received"] == LINES
    assert status["counts"]["batches_total"] == 21
    expected: dict[str, object] = {}
    for op in sent:
        if op["action"] == "add":
            expected[str(op["id"])] = op["attributes"]
        else:
            expected.pop(str(op["id"]), None)
    page = http.get(f"/v1/audiences/{audience}/members", params={"limit": 1000}).json()
    assert {m["id"]: m["attributes"] for m in page["members"]} == expected


def test_invalid_lines_in_late_blocks_refuse_the_whole_upload_in_line_order(
    http: httpx.Client, store: Store
) -> None:
    audience = http.post("/v1/audiences", json={"name": "blocks-bad"}).json()["id"]
    lines = [orjson.dumps(op) for op in ops(2)]
    lines[1_649] = b'{"action":"add","id":""}'
    lines[1_849] = b'{"action":"jump","id":"x"}'
    response = http.post(
        f"/v1/audiences/{audience}/uploads", content=b"\n".join(lines) + b"\n", headers=NDJSON
    )
    assert response.status_code == 400, response.text
    located = [detail["loc"] for detail in response.json()["error"]["details"]]
    assert located == ["line 1650", "line 1850"]
    assert nothing_accepted(store, audience)
