#!/usr/bin/env python3
"""A strict MDP/0.1 broker written from RFC 7 with pyzmq, in the style of the ZeroMQ Guide's broker: it heartbeats
idle workers only (never a busy one), answers REQ and DEALER clients with exactly the RFC envelope, answers any mmi.*
service with 501 (RFC 8, as the Guide's brokers do for what they do not implement), and drops anything else, counting
client messages that are not exact RFC 7 as `rejected`, and exiting (as the Guide's brokers abort) on a REQUEST
without a body frame. Used to check that our Client and Worker libraries work
behind such a broker.

Usage: strict_broker.py PORT_FILE HEARTBEAT_MS SECONDS
Binds tcp://127.0.0.1:*, writes the endpoint to PORT_FILE, serves for SECONDS, then prints its tallies.
"""
import sys
import time
import zmq

PORT_FILE, HB, SECONDS = sys.argv[1], int(sys.argv[2]) / 1000.0, float(sys.argv[3])
ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
sock.setsockopt(zmq.LINGER, 0)
sock.bind("tcp://127.0.0.1:*")
with open(PORT_FILE, "w") as f:
    f.write(sock.getsockopt(zmq.LAST_ENDPOINT).decode())

workers = {}      # worker id -> service
idle = {}         # service -> [worker id]
busy = {}         # worker id -> client envelope
queue = {}        # service -> [(envelope, body)]
readies = 0
replies = 0
unexpected = 0
rejected = 0
mmi = 0


def dispatch(service):
    while idle.get(service) and queue.get(service):
        w = idle[service].pop(0)
        env, body = queue[service].pop(0)
        busy[w] = env
        sock.send_multipart([w, b"", b"MDPW01", b"\x02", env[0], b""] + body)


end = time.time() + SECONDS
next_hb = time.time() + HB
while time.time() < end:
    if sock.poll(int(HB * 1000 / 2)):
        msg = sock.recv_multipart()
        sender = msg[0]
        # Client: [id, "", MDPC01, service, body...]
        if len(msg) >= 4 and msg[1] == b"" and msg[2] == b"MDPC01":
            # RFC 7: a REQUEST is the header, the service and one or more body frames. The Guide's C broker asserts
            # this (and aborts), its Python broker dies on it: so does this one.
            if len(msg) < 5:
                print(f"abort: REQUEST for {msg[3]!r} without a body frame", flush=True)
                sys.exit(3)
            service = msg[3]
            if service.startswith(b"mmi."):
                mmi += 1
                sock.send_multipart([sender, b"", b"MDPC01", service, b"501"])
            else:
                queue.setdefault(service, []).append(([sender], msg[4:]))
                dispatch(service)
        elif len(msg) >= 4 and msg[1] == b"" and msg[2] == b"MDPW01":
            command = msg[3]
            if command == b"\x01" and len(msg) == 5 and sender not in workers:
                readies += 1
                workers[sender] = msg[4]
                idle.setdefault(msg[4], []).append(sender)
                dispatch(msg[4])
            elif command == b"\x03" and sender in busy and len(msg) >= 6 and msg[5] == b"":
                client = busy.pop(sender)
                replies += 1
                sock.send_multipart([client[0], b"", b"MDPC01", workers[sender]] + msg[6:])
                idle[workers[sender]].append(sender)
                dispatch(workers[sender])
            elif command == b"\x04" and sender in workers:
                pass
            elif command == b"\x05":
                service = workers.pop(sender, None)
                if service is not None and sender in idle.get(service, []):
                    idle[service].remove(sender)
                busy.pop(sender, None)
            else:
                unexpected += 1
                sock.send_multipart([sender, b"", b"MDPW01", b"\x05"])
        elif sender not in workers:
            rejected += 1
    if time.time() > next_hb:
        # Like the Guide's brokers: heartbeats to idle workers only.
        for ws in idle.values():
            for w in ws:
                sock.send_multipart([w, b"", b"MDPW01", b"\x04"])
        next_hb = time.time() + HB
print(f"readies {readies} replies {replies} unexpected {unexpected} rejected {rejected} mmi {mmi}", flush=True)
