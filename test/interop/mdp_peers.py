#!/usr/bin/env python3
"""Plain MDP/0.1 and MDP/0.2 peers written from RFC 7 / RFC 18 / RFC 8 with pyzmq, run against a broker.

Usage: mdp_peers.py ENDPOINT HEARTBEAT_MS. Exits 0 when every check passes, prints what failed otherwise.
"""
import sys
import time
import zmq

EP = sys.argv[1]
HB = int(sys.argv[2]) / 1000.0
ctx = zmq.Context()
failures = []


def check(name, got, want):
    if got != want:
        failures.append(f"{name}: got {got!r}, want {want!r}")


def sock(kind):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 3000)
    s.connect(EP)
    return s


def recv_non_heartbeat(s, heartbeat):
    while True:
        m = s.recv_multipart()
        if m != heartbeat:
            return m


HB1 = [b"", b"MDPW01", b"\x04"]
HB2 = [b"MDPW02", b"\x05"]

# MDP/0.1 worker and REQ client
w1 = sock(zmq.DEALER)
w1.send_multipart([b"", b"MDPW01", b"\x01", b"py.echo"])
time.sleep(0.1)
c1 = sock(zmq.REQ)
c1.send_multipart([b"MDPC01", b"py.echo", b"one", b"two"])
req = recv_non_heartbeat(w1, HB1)
check("0.1 REQUEST shape", [req[0], req[1], req[2], req[4]] + req[5:], [b"", b"MDPW01", b"\x02", b"", b"one", b"two"])
w1.send_multipart([b"", b"MDPW01", b"\x03", req[3], b"", b"ONE", b"TWO"])
check("0.1 REPLY", c1.recv_multipart(), [b"MDPC01", b"py.echo", b"ONE", b"TWO"])

# MMI
c1.send_multipart([b"MDPC01", b"mmi.service", b"py.echo"])
check("mmi.service served", c1.recv_multipart(), [b"MDPC01", b"mmi.service", b"200"])
c1.send_multipart([b"MDPC01", b"mmi.service", b"py.nobody"])
check("mmi.service unknown", c1.recv_multipart(), [b"MDPC01", b"mmi.service", b"404"])
c1.send_multipart([b"MDPC01", b"mmi.nope"])
check("mmi other", c1.recv_multipart(), [b"MDPC01", b"mmi.nope", b"501"])

# MDP/0.2 worker with PARTIALs, DEALER client
w2 = sock(zmq.DEALER)
w2.send_multipart([b"MDPW02", b"\x01", b"py.stream"])
time.sleep(0.1)
c2 = sock(zmq.DEALER)
c2.send_multipart([b"MDPC02", b"\x01", b"py.stream", b"go"])
req = recv_non_heartbeat(w2, HB2)
check("0.2 REQUEST shape", [req[0], req[1], req[3], req[4]], [b"MDPW02", b"\x02", b"", b"go"])
w2.send_multipart([b"MDPW02", b"\x03", req[2], b"", b"p1"])
w2.send_multipart([b"MDPW02", b"\x04", req[2], b"", b"fin"])
check("0.2 PARTIAL", c2.recv_multipart(), [b"MDPC02", b"\x02", b"py.stream", b"p1"])
check("0.2 FINAL", c2.recv_multipart(), [b"MDPC02", b"\x03", b"py.stream", b"fin"])

# 0.1 client on a 0.2 worker: one REPLY from FINAL only
c1.send_multipart([b"MDPC01", b"py.stream", b"x"])
req = recv_non_heartbeat(w2, HB2)
w2.send_multipart([b"MDPW02", b"\x03", req[2], b"", b"dropped-for-v1"])
w2.send_multipart([b"MDPW02", b"\x04", req[2], b"", b"only"])
check("0.1 client via 0.2 worker", c1.recv_multipart(), [b"MDPC01", b"py.stream", b"only"])

# Heartbeats arrive at the interval; unexpected commands get DISCONNECT
w3 = sock(zmq.DEALER)
w3.send_multipart([b"", b"MDPW01", b"\x04"])
check("HEARTBEAT before READY", w3.recv_multipart(), [b"", b"MDPW01", b"\x05"])
w4 = sock(zmq.DEALER)
w4.send_multipart([b"MDPW02", b"\x01", b"py.hb"])
check("heartbeat from broker", w4.recv_multipart(), HB2)
w4.send_multipart([b"MDPW02", b"\x01", b"py.hb"])
check("second READY", recv_non_heartbeat(w4, HB2), [b"MDPW02", b"\x06"])

# A silent worker holding a request is expired; its request goes to the next worker.
w5 = sock(zmq.DEALER)
w5.send_multipart([b"", b"MDPW01", b"\x01", b"py.die"])
time.sleep(0.1)
c1.send_multipart([b"MDPC01", b"py.die", b"precious"])
req = recv_non_heartbeat(w5, HB1)
w5.close()
w6 = sock(zmq.DEALER)
w6.send_multipart([b"", b"MDPW01", b"\x01", b"py.die"])
req = recv_non_heartbeat(w6, HB1)
check("requeued body", req[5:], [b"precious"])
w6.send_multipart([b"", b"MDPW01", b"\x03", req[3], b"", b"saved"])
check("requeued reply", c1.recv_multipart(), [b"MDPC01", b"py.die", b"saved"])

# Transport variants: a routing id set by the peer, ZMTP heartbeats on (the broker answers the peer's PINGs and
# PINGs it back), a REQ with an identity; each served by a 0.1 worker that heartbeats.
def variant(kind, identity=None, heartbeat=False):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 3000)
    if identity:
        s.setsockopt(zmq.IDENTITY, identity)
    if heartbeat:
        s.setsockopt(zmq.HEARTBEAT_IVL, 50)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 500)
    s.connect(EP)
    return s


w7 = sock(zmq.DEALER)
w7.send_multipart([b"", b"MDPW01", b"\x01", b"py.echo7"])
for name, kind, ident, hb in [("dealer+id", zmq.DEALER, b"py-dealer", False), ("dealer+hb", zmq.DEALER, None, True),
                              ("req+id+hb", zmq.REQ, b"py-req", True)]:
    v = variant(kind, ident, hb)
    env = [] if kind == zmq.REQ else [b""]
    for k in range(2):
        v.send_multipart(env + [b"MDPC01", b"py.echo7", name.encode()])
        req = recv_non_heartbeat(w7, HB1)
        w7.send_multipart([b"", b"MDPW01", b"\x03", req[3], b""] + req[5:])
        try:
            check(f"{name} reply {k}", v.recv_multipart(), env + [b"MDPC01", b"py.echo7", name.encode()])
        except zmq.Again:
            failures.append(f"{name} reply {k}: timed out")
        time.sleep(0.1)  # idle: ZMTP heartbeats flow both ways
        w7.send_multipart(HB1)
    v.close()

for f in failures:
    print("FAIL", f)
print("python peers:", "ok" if not failures else f"{len(failures)} failures")
sys.exit(1 if failures else 0)
