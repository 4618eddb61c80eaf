"""The official RocketMQ 5.x Python client (PyPI rocketmq-python-client) against Apogee's gRPC
endpoint: a Producer sends N messages, a SimpleConsumer in a fresh group receives and acks them
all; prints "grpc-python: ok N" or exits non-zero naming what was missing."""

import argparse
import sys
import time
import uuid

from rocketmq import (ClientConfiguration, Credentials, FilterExpression,
                      Message, Producer, SimpleConsumer)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()

    config = ClientConfiguration(args.endpoint, Credentials())
    run = uuid.uuid4().hex[:8]
    producer = Producer(config, (args.topic,))
    producer.startup()
    sent = set()
    try:
        for i in range(args.n):
            msg = Message()
            msg.topic = args.topic
            msg.body = f"{run}-{i}".encode()
            msg.tag = "grpc"
            msg.keys = f"key-{i}"
            producer.send(msg)
            sent.add(f"{run}-{i}")
    finally:
        producer.shutdown()

    consumer = SimpleConsumer(config, f"GID_grpc_python_{run}", await_duration=5)
    consumer.startup()
    got = set()
    deadline = time.time() + args.timeout
    try:
        consumer.subscribe(args.topic, FilterExpression("grpc"))
        while got != sent and time.time() < deadline:
            for m in consumer.receive(32, 30) or []:
                consumer.ack(m)
                body = m.body.decode()
                if body in sent:
                    got.add(body)
    finally:
        consumer.shutdown()

    missing = sent - got
    if missing:
        print(f"grpc-python: FAILED, {len(missing)} of {len(sent)} not received, e.g. {sorted(missing)[:5]}")
        sys.exit(1)
    print(f"grpc-python: ok {len(sent)}")


if __name__ == "__main__":
    main()
