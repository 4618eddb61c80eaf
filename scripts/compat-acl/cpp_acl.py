"""The C++ RocketMQ client (PyPI `rocketmq` 0.4.4) against an ACL broker: produces N messages
signed with the given account and consumes them in a fresh group. With --expect-refusal the
sends must all fail (wrong secret or no permission) instead. Prints one JSON line; exit 0 when
the expectation held.
    usage: cpp_acl.py --namesrv H:P --topic T --ak AK --sk SK [--n 20] [--expect-refusal]"""
import argparse
import json
import os
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--namesrv", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--ak", required=True)
    ap.add_argument("--sk", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--expect-refusal", action="store_true")
    ap.add_argument("--log-dir", default="/tmp/rmq-client-logs/cpp-acl")
    a = ap.parse_args()
    os.makedirs(a.log_dir, exist_ok=True)
    os.environ["HOME"] = a.log_dir  # librocketmq logs under $HOME/logs
    from rocketmq.client import Producer, Message, PushConsumer

    run = format(int(time.time() * 1000), "x")
    errors, sent = [], 0
    p = Producer("PG_acl_cpp_" + run, timeout=3000)
    p.set_namesrv_addr(a.namesrv)
    p.set_session_credentials(a.ak, a.sk, "ALIYUN")
    p.start()
    for i in range(a.n):
        m = Message(a.topic)
        m.set_keys("%s-%d" % (run, i))
        m.set_body("acl %d" % i)
        try:
            r = p.send_sync(m)
            if int(r.status) == 0:
                sent += 1
            else:
                errors.append("status %s" % r.status)
        except Exception as e:  # noqa: BLE001
            errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
            if a.expect_refusal:
                break
    p.shutdown()
    if a.expect_refusal:
        ok = sent == 0 and bool(errors)
        print(json.dumps({"client": "cpp", "expect": "refusal", "sent": sent, "ok": ok, "errors": errors[:3]}))
        return 0 if ok else 1

    got = set()
    lock = threading.Lock()

    def on_message(msg):
        with lock:
            got.add(msg.keys.decode() if isinstance(msg.keys, bytes) else msg.keys)
        # Returning normally acknowledges the message (the binding maps it to CONSUME_SUCCESS).

    c = PushConsumer("CG_acl_cpp_" + run)
    c.set_namesrv_addr(a.namesrv)
    c.set_session_credentials(a.ak, a.sk, "ALIYUN")
    c.subscribe(a.topic, on_message)
    c.start()
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        with lock:
            if len([k for k in got if k.startswith(run)]) >= a.n:
                break
        time.sleep(0.2)
    c.shutdown()
    received = len([k for k in got if k.startswith(run)])
    ok = sent == a.n and received == a.n
    print(json.dumps({"client": "cpp", "sent": sent, "received": received, "ok": ok, "errors": errors[:3]}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
