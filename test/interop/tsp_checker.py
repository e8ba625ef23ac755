"""A strict Titanic Service Protocol (RFC 9) checker, written from the RFC text, over plain pyzmq MDP/0.1 (RFC 7).

  tsp_checker.py store ENDPOINT N UUIDFILE   store N requests for 'tsp.echo' (no worker yet), check every answer
  tsp_checker.py finish ENDPOINT UUIDFILE    serve 'tsp.echo' with a raw MDP worker, fetch and close every reply

Exits 0 and prints 'tsp: ok' when every frame is as RFC 9 says; anything else is an AssertionError.
"""
import re
import sys
import time
import zmq

C = b'MDPC01'
W = b'MDPW01'
STATUS = re.compile(rb'^(200|300|400|500)( .*)?$', re.S)
UUID = re.compile(rb'^[0-9A-Za-z]{32}$')


def client(ctx, endpoint):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def call(s, service, frames, timeout_ms=5000):
    s.send_multipart([b'', C, service] + frames)
    if not s.poll(timeout_ms):
        raise AssertionError('no answer from %s within %d ms' % (service, timeout_ms))
    msg = s.recv_multipart()
    assert msg[0] == b'' and msg[1] == C and msg[2] == service, 'RFC 7 client reply header: %r' % msg[:3]
    body = msg[3:]
    assert len(body) >= 1, 'RFC 9: every reply has a status frame'
    m = STATUS.match(body[0])
    assert m, 'RFC 9: the status frame is three digits of 200/300/400/500, optionally a space and text: %r' % body[0]
    return m.group(1), body[1:]


def store(endpoint, n, path):
    ctx = zmq.Context()
    s = client(ctx, endpoint)
    uuids = []
    for i in range(n):
        code, rest = call(s, b'titanic.request', [b'tsp.echo', b'body-%d' % i, b'\x00\xff'])
        assert code == b'200', 'titanic.request answered %r' % code
        assert len(rest) == 1 and UUID.match(rest[0]), 'RFC 9: 200 then the UUID, 32 hexadecimal characters: %r' % rest
        uuids.append(rest[0])
    assert len(set(uuids)) == n, 'every request gets its own UUID'
    code, rest = call(s, b'titanic.reply', [uuids[0]])
    assert code == b'300' and rest == [], 'no worker yet: 300 PENDING, got %r %r' % (code, rest)
    unknown = b'0' * 32
    code, _ = call(s, b'titanic.reply', [unknown])
    assert code == b'400', 'an unknown UUID: 400, got %r' % code
    code, rest = call(s, b'titanic.close', [unknown])
    assert code == b'200' and rest == [], 'RFC 9: titanic.close of an unknown UUID MUST return 200, got %r' % code
    code, _ = call(s, b'titanic.reply', [b'xyz'])
    assert code == b'400', 'a malformed UUID: 400, got %r' % code
    with open(path, 'wb') as f:
        f.write(b'\n'.join(uuids))
    print('tsp: stored %d' % n)
    s.close()
    ctx.term()


def finish(endpoint, path):
    uuids = open(path, 'rb').read().split(b'\n')
    ctx = zmq.Context()
    worker = ctx.socket(zmq.DEALER)
    worker.setsockopt(zmq.LINGER, 0)
    worker.connect(endpoint)
    worker.send_multipart([b'', W, b'\x01', b'tsp.echo'])
    s = client(ctx, endpoint)
    poller = zmq.Poller()
    poller.register(worker, zmq.POLLIN)
    served = 0
    last_hb = time.time()
    pending = list(range(len(uuids)))
    deadline = time.time() + 60
    while pending:
        assert time.time() < deadline, '%d replies still pending after 60 s' % len(pending)
        for sock, _ in poller.poll(20):
            msg = worker.recv_multipart()
            assert msg[0] == b'' and msg[1] == W, 'RFC 7 worker header: %r' % msg[:2]
            if msg[2] == b'\x02':
                addr, empty, body = msg[3], msg[4], msg[5:]
                assert empty == b''
                worker.send_multipart([b'', W, b'\x03', addr, b''] + [b'echo:' + body[0]] + body[1:])
                served += 1
        if time.time() - last_hb > 0.5:
            worker.send_multipart([b'', W, b'\x04'])
            last_hb = time.time()
        still = []
        for i in pending[:50]:
            code, rest = call(s, b'titanic.reply', [uuids[i]])
            if code == b'300':
                still.append(i)
                continue
            assert code == b'200', 'titanic.reply answered %r' % code
            assert rest == [b'echo:body-%d' % i, b'\x00\xff'], 'the reply, frame for frame: %r' % rest
            again = call(s, b'titanic.reply', [uuids[i].upper()])
            assert again == (b'200', rest), 'RFC 9: titanic.reply is idempotent'
            code, rest = call(s, b'titanic.close', [uuids[i]])
            assert code == b'200' and rest == [], 'titanic.close: 200'
            code, _ = call(s, b'titanic.reply', [uuids[i]])
            assert code == b'400', 'closed: the UUID is unknown now, got %r' % code
        pending = still + pending[50:]
    assert served >= len(uuids), 'the worker ran every request at least once (%d runs)' % served
    worker.send_multipart([b'', W, b'\x05'])
    print('tsp: ok (%d replies, %d runs)' % (len(uuids), served))
    worker.close()
    s.close()
    ctx.term()


if __name__ == '__main__':
    if sys.argv[1] == 'store':
        store(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        finish(sys.argv[2], sys.argv[3])
