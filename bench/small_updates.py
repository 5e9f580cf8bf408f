"""Where a 100-op update waits during a bulk ingest of the Batch shape.

``python -m bench.small_updates [BULK_REQUESTS]`` sends BULK_REQUESTS requests of 10,000
Batch-shape ops from one thread while another sends a 100-op update every 0.2 s, and
splits each update's submit-to-APPLIED time into the API's answer, the wait until a
worker starts it (the store records that start) and the apply. Prints p50/p99/max of each.
"""

import json
import statistics
import sys
import threading
import time
from datetime import datetime

from bench.stack import BenchStack
from worker.store import keys


def batch_ops(n, prefix):
    return [
        {
            "action": "add",
            "id": f"{prefix}-{i}",
            "attributes": {
                "att1": i,
                "att2": "string",
                "date(att15)": "2023-08-12T22:30:05Z",
                "url(att20)": "",
            },
        }
        for i in range(n)
    ]


def iso(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


with BenchStack() as st:
    key = st.new_key("probe")
    bulk_aud = st.create_audience(key, "bulk")
    small_aud = st.create_audience(key, "small")
    bodies = [
        json.dumps({"ids": batch_ops(10_000, f"b{r}")}).encode()
        for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
    ]
    done = threading.Event()

    def bulk():
        with st.http(key) as h:
            for b in bodies:
                h.post(
                    f"/v1/audiences/{bulk_aud}/members",
                    content=b,
                    headers={"Content-Type": "application/json"},
                ).raise_for_status()
        done.set()

    rows = []
    t = threading.Thread(target=bulk)
    t.start()
    with st.http(key) as h:
        n = 0
        while not done.is_set():
            body = json.dumps({"ids": batch_ops(100, f"s{n}")}).encode()
            n += 1
            t0 = time.time()
            r = h.post(
                f"/v1/audiences/{small_aud}/members",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            t1 = time.time()
            tok = r.json()["indexing_token"]
            while True:
                s = h.get(f"/v1/indexing/{tok}").json()
                if s["indexing_state"] != "IN_PROCESS":
                    break
                time.sleep(0.01)
            delivered = float(st.r.hget(keys.token(small_aud, tok), "delivered:0"))
            rows.append(
                (
                    t1 - t0,
                    delivered - t1,
                    iso(s["applied_at"]) - delivered,
                    iso(s["applied_at"]) - t0,
                )
            )
            time.sleep(0.2)
    t.join()
    for name, i in (("api", 0), ("queue", 1), ("apply", 2), ("total", 3)):
        v = sorted(r[i] for r in rows)
        p99 = v[max(0, int(len(v) * 0.99) - 1)]
        print(f"{name:6s} p50 {statistics.median(v):.3f} p99 {p99:.3f} max {v[-1]:.3f} n={len(v)}")
    print(st.script_stats())
