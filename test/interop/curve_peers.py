#!/usr/bin/env python3
"""pyzmq (libzmq) CURVE peers against a CURVE broker: an MDP/0.2 worker and an MDP/0.1 REQ client with their own
key pairs, plus a key the broker does not allow. Written from RFC 7/18 and pyzmq's CURVE socket options.

Usage: curve_peers.py ENDPOINT SERVER_PUBLIC WORKER_PUBLIC WORKER_SECRET CLIENT_PUBLIC CLIENT_SECRET
Exits 0 when every check passes, prints what failed otherwise.
"""
import sys
import threading
import zmq

EP, SERVER, WPUB, WSEC, CPUB, CSEC = sys.argv[1:7]
ctx = zmq.Context()
failures = []
N = 20
BODY = bytes(range(256)) * 280  # 71,680 bytes: several TCP segments, one CURVE box


def curve(s, pub, sec):
    s.curve_serverkey = SERVER.encode()
    s.curve_publickey = pub.encode()
    s.curve_secretkey = sec.encode()


def worker():
    w = ctx.socket(zmq.DEALER)
    w.setsockopt(zmq.LINGER, 0)
    w.setsockopt(zmq.RCVTIMEO, 5000)
    curve(w, WPUB, WSEC)
    w.connect(EP)
    w.send_multipart([b"MDPW02", b"\x01", b"pycurve"])
    served = 0
    try:
        while served < N:
            m = w.recv_multipart()
            if m[:2] != [b"MDPW02", b"\x02"]:
                continue  # heartbeats
            client, body = m[2], m[4:]
            w.send_multipart([b"MDPW02", b"\x04", client, b""] + [b"py:" + body[0][:8], body[0]])
            served += 1
    except zmq.Again:
        failures.append(f"worker: timed out after {served} requests")
    # The last reply may still be queued: let it go out before the socket closes.
    w.setsockopt(zmq.LINGER, 2000)
    w.close()


t = threading.Thread(target=worker)
t.start()

c = ctx.socket(zmq.REQ)
c.setsockopt(zmq.LINGER, 0)
c.setsockopt(zmq.RCVTIMEO, 5000)
curve(c, CPUB, CSEC)
c.connect(EP)
for i in range(N):
    body = str(i).encode() + BODY
    c.send_multipart([b"MDPC01", b"pycurve", body])
    try:
        r = c.recv_multipart()
    except zmq.Again:
        failures.append(f"client: no reply to request {i}")
        break
    want = [b"MDPC01", b"pycurve", b"py:" + body[:8], body]
    if r != want:
        failures.append(f"client: reply {i} differs: {[len(f) for f in r]} frames of lengths")
        break
c.close()
t.join()

# A key the broker does not allow: libzmq gets ERROR from the handshake, the request is never answered.
pub, sec = zmq.curve_keypair()
x = ctx.socket(zmq.DEALER)
x.setsockopt(zmq.LINGER, 0)
x.setsockopt(zmq.RCVTIMEO, 1000)
curve(x, pub.decode(), sec.decode())
x.connect(EP)
x.send_multipart([b"", b"MDPC01", b"pycurve", b"let me in"])
try:
    failures.append(f"unlisted key got an answer: {x.recv_multipart()!r}")
except zmq.Again:
    pass
x.close()
ctx.term()

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"python curve peers: ok ({N} requests of {len(BODY)} bytes, unlisted key refused)")
