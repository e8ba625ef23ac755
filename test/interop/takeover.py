#!/usr/bin/env python3
"""A pyzmq peer that tries to read another client's reply by taking its routing id (RFC 7 peers, libzmq sockets).

Usage: takeover.py ENDPOINT. A worker (MDP/0.1 DEALER) takes a request from client "victim"; the victim leaves; a
new DEALER announces the same Identity, sends a request of its own, and waits while the worker replies to "victim".
Exits 0 when the thief got nothing, 1 (saying what it got) otherwise.
"""
import sys
import time
import zmq

EP = sys.argv[1]
ctx = zmq.Context()


def dealer(identity=None):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 3000)
    if identity is not None:
        s.setsockopt(zmq.IDENTITY, identity)
    s.connect(EP)
    return s


worker = dealer()
worker.send_multipart([b"", b"MDPW01", b"\x01", b"b"])
time.sleep(0.2)
victim = dealer(b"victim")
victim.send_multipart([b"", b"MDPC01", b"b", b"secret question"])
while True:
    m = worker.recv_multipart()
    if m[2] == b"\x02":
        break
assert m[3] == b"victim" and m[5] == b"secret question", m
victim.close()
time.sleep(0.3)
thief = dealer(b"victim")
thief.send_multipart([b"", b"MDPC01", b"elsewhere", b"mine"])
time.sleep(0.3)
worker.send_multipart([b"", b"MDPW01", b"\x03", b"victim", b"", b"secret answer"])
if thief.poll(1000):
    print("takeover: the thief got", thief.recv_multipart())
    sys.exit(1)
print("takeover: nothing for the thief")
