/* The czmq 1-3 calls the ZeroMQ Guide's examples/C/mdbroker.c makes (zctx_t, zsocket_*, zclock_log), over czmq 4
 * (Debian's libczmq-dev) and libzmq, so the Guide's C broker can be measured beside mdbroker. Bench use only.
 * Build (see docs/benchmarking.md):
 *   gcc -O2 -include bench/c/czmq3-compat.h -o /tmp/guide-mdbroker mdbroker.c -lczmq -lzmq
 */
#ifndef CZMQ3_COMPAT_H
#define CZMQ3_COMPAT_H
#include <czmq.h>
#include <stdarg.h>

typedef struct { void *ctx; } zctx_t;

static inline zctx_t *zctx_new (void) {
    zctx_t *c = (zctx_t *) malloc (sizeof *c);
    c->ctx = zmq_ctx_new ();
    return c;
}
/* The broker exits right after; its sockets are not closed, so the context is not terminated. */
static inline void zctx_destroy (zctx_t **c) { if (*c) { free (*c); *c = NULL; } }
#define zctx_interrupted zsys_interrupted

static inline void *zsocket_new (zctx_t *c, int type) {
    void *s = zmq_socket (c->ctx, type);
    int linger = 0;
    zmq_setsockopt (s, ZMQ_LINGER, &linger, sizeof linger);
    return s;
}
static inline int zsocket_bind (void *s, const char *fmt, ...) {
    char endpoint [256];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (endpoint, sizeof endpoint, fmt, ap);
    va_end (ap);
    return zmq_bind (s, endpoint) == 0 ? 0 : -1;
}
#define zclock_log zsys_info
#endif
