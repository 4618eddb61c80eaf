"""The official RocketMQ 5.x Python client (PyPI rocketmq-python-client) against Apogee's gRPC
endpoint: a Producer sends N messages (every 5th with a message group, every 5th a timer message
about 2 s ahead, every 5th transactional and committed, the rest normal), plus one transaction
rolled back (must never arrive) and one left open (the broker checks it back; the checker
commits it, so it must arrive). A SimpleConsumer in a fresh group receives them, leaves every
10th unacked once (it must come back with its delivery attempt raised) and acks the rest; timer
messages must not come early. Prints "grpc-python: ok N" or exits non-zero saying what failed."""

import argparse
import sys
import time
import uuid

from rocketmq import (ClientConfiguration, Credentials, FilterExpression,
                      Message, Producer, SimpleConsumer, TransactionChecker,
                      TransactionResolution)


class Checker(TransactionChecker):
    """Commits what the broker checks back, except the rolled back ones; records the bodies."""

    def __init__(self):
        self.checked = set()
        self.rolled_back = set()

    def check(self, message):
        body = message.body.decode()
        self.checked.add(body)
        if body in self.rolled_back:
            return TransactionResolution.ROLLBACK
        return TransactionResolution.COMMIT


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=120)
    # TLS: the client's tls_enable; the server's certificate must be trusted through
    # GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (this client passes no roots of its own).
    ap.add_argument("--tls", action="store_true")
    args = ap.parse_args()

    config = ClientConfiguration(args.endpoint, Credentials())
    run = uuid.uuid4().hex[:8]
    checker = Checker()
    producer = Producer(config, (args.topic,), checker, tls_enable=args.tls)
    producer.startup()
    sent = set()
    deliver_at = {}

    def half(body):
        msg = Message()
        msg.topic = args.topic
        msg.body = body.encode()
        msg.tag = "grpc"
        tx = producer.begin_transaction()
        producer.send(msg, tx)
        return tx

    try:
        for i in range(args.n):
            body = f"{run}-{i}"
            msg = Message()
            msg.topic = args.topic
            msg.body = body.encode()
            msg.tag = "grpc"
            msg.keys = f"key-{i}"
            if i % 5 == 1:
                msg.message_group = f"group-{i % 3}"
            elif i % 5 == 2:
                # This client puts the value into Timestamp.seconds: whole seconds, not ms.
                at = int(time.time()) + 2
                deliver_at[body] = at * 1000
                msg.delivery_timestamp = at
            if i % 5 == 3:
                half(body).commit()
            else:
                producer.send(msg)
            sent.add(body)
        rolled_back = f"{run}-rb-0"
        checker.rolled_back.add(rolled_back)
        half(rolled_back).rollback()
        # Left open: only the broker's check-back (answered COMMIT) delivers it.
        orphan = f"{run}-orphan-0"
        half(orphan)
        sent.add(orphan)
    except BaseException:
        producer.shutdown()
        raise

    consumer = SimpleConsumer(
        config, f"GID_grpc_python_{run}", await_duration=5, tls_enable=args.tls
    )
    consumer.startup()
    got, left_once, errors = set(), set(), []
    deadline = time.time() + args.timeout
    try:
        consumer.subscribe(args.topic, FilterExpression("grpc"))
        while got != sent and time.time() < deadline:
            for m in consumer.receive(32, 5) or []:
                body = m.body.decode()
                if body == rolled_back:
                    errors.append(f"rolled back {body} was delivered")
                if body not in sent:
                    consumer.ack(m)
                    continue
                now = int(time.time() * 1000)
                if body in deliver_at and now < deliver_at[body]:
                    errors.append(f"{body} delivered {deliver_at[body] - now} ms early")
                if int(body.rsplit("-", 1)[1]) % 10 == 0 and body not in left_once:
                    left_once.add(body)  # not acked: handed out again after 5 s
                    continue
                if body in left_once and m.delivery_attempt < 2:
                    errors.append(f"{body} came back with delivery attempt {m.delivery_attempt}")
                consumer.ack(m)
                got.add(body)
    finally:
        consumer.shutdown()
        producer.shutdown()

    if orphan not in checker.checked:
        errors.append(f"the open transaction {orphan} was never checked back")
    missing = sent - got
    if errors:
        print(f"grpc-python: FAILED, {errors[:5]}")
        sys.exit(1)
    if missing:
        print(f"grpc-python: FAILED, {len(missing)} of {len(sent)} not received, e.g. {sorted(missing)[:5]}")
        sys.exit(1)
    print(f"grpc-python: ok {len(sent)}")


if __name__ == "__main__":
    main()
