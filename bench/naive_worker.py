"""The baseline: the serial loop a user would write first — poll → call → produce → flush → commit, per event.

    python bench/naive_worker.py --bootstrap HOST:PORT --input IN --output OUT --group G \\
        --api-url URL --group-ids bench [--api v1|iai] [--max-events N] [--max-seconds S]

One ``requests.Session`` (keep-alive, the kinder baseline: ``requests.post`` without a Session costs
≈ 15 % more CPU per call on plain HTTP), a ``produce`` followed by ``flush()`` and a synchronous ``commit``
for every event. ``--api v1`` (default) posts to ``/face/multidentify`` with the multi-use signature computed
once; ``--api iai`` posts SearchFaces (``MaxFaceNum`` 10, as the worker asks) to ``/`` of the same URL, signed
per request (TC3 signs the body). No retries, no concurrency: each output record carries the API's code
(IAI: ``Response.Error.Code``, 0 without an error), whatever it was. It writes one output per event to
``--output`` with the same ``event_id`` and ``source`` fields as the worker's result records, so the bench reads
both the same way.

Bounded: stops after ``--max-events`` events or ``--max-seconds`` seconds, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from confluent_kafka import Consumer, Producer

from worker.api import tc3
from worker.api.signature import sign
from worker.emulator import DEV_ACCOUNT

#: One call: (event's image URL) → (the API's code, the faces found).
Call = Callable[[str], tuple[Any, list[Any]]]


def v1_call(session: requests.Session, api_url: str, groups: list[str]) -> Call:
    endpoint = api_url.rstrip("/") + "/face/multidentify"
    auth = sign(DEV_ACCOUNT.appid, DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=int(time.time()), lifetime=3600)
    headers = {"Authorization": auth, "Content-Type": "application/json"}

    def call(url: str) -> tuple[Any, list[Any]]:
        body: dict[str, Any] = {"appid": DEV_ACCOUNT.appid, "url": url}
        body.update({"group_id": groups[0]} if len(groups) == 1 else {"group_ids": groups})
        response = session.post(endpoint, data=orjson.dumps(body), headers=headers, timeout=(3, 10))
        answer = orjson.loads(response.content)
        return answer.get("code"), (answer.get("data") or {}).get("results", [])

    return call


def iai_call(session: requests.Session, api_url: str, groups: list[str]) -> Call:
    endpoint = api_url.rstrip("/") + "/"
    host = urlsplit(api_url).netloc  # signed as sent, port included

    def call(url: str) -> tuple[Any, list[Any]]:
        body = orjson.dumps({"GroupIds": groups, "Url": url, "MaxFaceNum": 10})
        now = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Host": host,
            "X-TC-Action": "SearchFaces",
            "X-TC-Version": "2020-03-03",
            "X-TC-Timestamp": str(now),
            "X-TC-Region": "ap-guangzhou",
            "Authorization": tc3.authorization(
                DEV_ACCOUNT.secret_id,
                DEV_ACCOUNT.secret_key,
                service="iai",
                host=host,
                content_type="application/json",
                body=body,
                timestamp=now,
            ),
        }
        response = session.post(endpoint, data=body, headers=headers, timeout=(3, 10))
        answer = orjson.loads(response.content).get("Response") or {}
        return (answer.get("Error") or {}).get("Code", 0), answer.get("Results", [])

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--group-ids", default="bench")
    parser.add_argument("--api", choices=("v1", "iai"), default="v1")
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
    groups = [g for g in args.group_ids.split(",") if g]
    call = (iai_call if args.api == "iai" else v1_call)(session, args.api_url, groups)
    consumer.subscribe([args.input])
    done = 0
    deadline = time.monotonic() + args.max_seconds
    try:
        while not stopping and done < args.max_events and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            event = orjson.loads(msg.value() or b"{}")
            try:
                code, faces = call(event["image_url"])
            except (requests.RequestException, orjson.JSONDecodeError) as exc:
                code, faces = type(exc).__name__, []
            out = {
                "event_id": event.get("event_id"),
                "code": code,
                "faces": faces,
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
