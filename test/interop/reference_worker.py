#!/usr/bin/env python3
"""A worker in the style of the ZeroMQ Guide's mdwrkapi (MDP/0.1, pyzmq): it heartbeats only while idle and blocks
in its handler, so during a long job the broker hears nothing from it at the MDP level. libzmq still answers the
broker's ZMTP PINGs from its I/O thread.

Usage: reference_worker.py ENDPOINT SERVICE HEARTBEAT_MS JOB_SECONDS REQUESTS
Serves REQUESTS requests (each: sleep JOB_SECONDS, reply "done:" + body), then prints "jobs N reconnects M".
"""
import sys
import time
import zmq

EP, SERVICE, HB, JOB, COUNT = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]) / 1000.0, float(sys.argv[4]), int(sys.argv[5])
LIVENESS = 3
ctx = zmq.Context()
jobs = 0
reconnects = 0


def connect():
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(EP)
    s.send_multipart([b"", b"MDPW01", b"\x01", SERVICE])
    return s


sock = connect()
liveness = LIVENESS
next_hb = time.time() + HB
while jobs < COUNT:
    if sock.poll(int(HB * 1000)):
        msg = sock.recv_multipart()
        liveness = LIVENESS
        command = msg[2]
        if command == b"\x02":
            client, body = msg[3], msg[5:]
            time.sleep(JOB)  # the handler blocks: no heartbeats meanwhile, as in the Guide
            jobs += 1
            sock.send_multipart([b"", b"MDPW01", b"\x03", client, b""] + [b"done:" + body[0]])
        elif command == b"\x05":
            reconnects += 1
            sock.close()
            sock = connect()
    else:
        liveness -= 1
        if liveness == 0:
            reconnects += 1
            sock.close()
            sock = connect()
            liveness = LIVENESS
    if time.time() > next_hb:
        sock.send_multipart([b"", b"MDPW01", b"\x04"])
        next_hb = time.time() + HB
print(f"jobs {jobs} reconnects {reconnects}", flush=True)
