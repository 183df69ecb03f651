"""The baseline: the serial loop a user would write first — poll → call → produce → flush → commit, per event.

    python bench/naive_worker.py --bootstrap HOST:PORT --input IN --output OUT --group G \\
        --api-url URL --group-ids bench [--max-events N] [--max-seconds S]

One ``requests.Session`` (keep-alive, the kinder baseline: ``requests.post`` without a Session costs
≈ 15 % more CPU per call on plain HTTP), the multi-use signature computed once, a ``produce`` followed by
``flush()`` and a synchronous ``commit`` for every event. No retries, no concurrency: each output record
carries the API's code, whatever it was. It writes one output per event to ``--output`` with the same
``event_id`` and ``source`` fields as the worker's result records, so the bench reads both the same way.

Bounded: stops after ``--max-events`` events or ``--max-seconds`` seconds, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

import orjson
import requests
from confluent_kafka import Consumer, Producer

from worker.api.signature import sign
from worker.emulator import DEV_ACCOUNT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--group-ids", default="bench")
    parser.add_argument("--session-timeout-ms", type=int, default=3000)
    parser.add_argument("--max-events", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)

    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": max(100, args.session_timeout_ms // 3),
        }
    )
    producer = Producer({"bootstrap.servers": args.bootstrap})
    session = requests.Session()
    endpoint = args.api_url.rstrip("/") + "/face/multidentify"
    groups = [g for g in args.group_ids.split(",") if g]
    auth = sign(DEV_ACCOUNT.appid, DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=int(time.time()), lifetime=3600)
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    consumer.subscribe([args.input])
    done = 0
    deadline = time.monotonic() + args.max_seconds
    try:
        while not stopping and done < args.max_events and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            event = orjson.loads(msg.value() or b"{}")
            body = {"appid": DEV_ACCOUNT.appid, "url": event["image_url"]}
            body.update({"group_id": groups[0]} if len(groups) == 1 else {"group_ids": groups})
            try:
                response = session.post(endpoint, data=orjson.dumps(body), headers=headers, timeout=(3, 10))
                answer = orjson.loads(response.content)
                code, data = answer.get("code"), answer.get("data") or {}
            except (requests.RequestException, orjson.JSONDecodeError) as exc:
                code, data = type(exc).__name__, {}
            out = {
                "event_id": event.get("event_id"),
                "code": code,
                "faces": data.get("results", []),
                "source": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
            }
            producer.produce(args.output, value=orjson.dumps(out))
            producer.flush()
            consumer.commit(message=msg, asynchronous=False)
            done += 1
    finally:
        consumer.close()
        producer.flush(5)
        session.close()
    print(f"naive worker: {done} events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
