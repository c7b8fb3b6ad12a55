/* folo serve's HTTP server: an OpenAI-compatible API over one engine.
 *
 * Owns a libmicrohttpd daemon (one thread per connection, bound to
 * host:port), the engine's output thread (folo_engine_start) and a table
 * of in-flight requests. Threads and the one rule between them:
 *   - the engine thread runs the step loop and hands each output to a
 *     callback that only copies it into the request's event queue under
 *     the server mutex and signals a condvar: it never waits on a client;
 *   - each connection thread parses its request, adds it to the engine,
 *     then drains its queue (blocking on the condvar), writing one JSON
 *     response or an SSE stream.
 * A request's entry lives until both sides let go: the connection when its
 * response is done or the client went away (then the request is aborted),
 * the engine when every sample has finished. Routes: GET /health,
 * GET /metrics (metrics.h), GET /v1/models, POST /v1/completions (one
 * engine request per prompt), POST /v1/chat/completions, POST /tokenize,
 * POST /detokenize. A request the engine refuses because its queue is full
 * (folo_engine_options.max_queue, `--max-queue`) is answered 503 with
 * Retry-After. */
#ifndef FOLO_SERVER_SERVER_H
#define FOLO_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "folo.h"

#define FOLO_SERVER_MAX_BODY_BYTES ((size_t)4 << 20)

typedef struct folo_server_options {
    const char *host;          /* IPv4 address or name to bind (127.0.0.1) */
    int port;                  /* 8000 */
    const char *model_name;    /* the name /v1/models lists and requests must use */
    size_t max_body_bytes;     /* larger bodies get 413 (FOLO_SERVER_MAX_BODY_BYTES) */
    const char *api_key;       /* NULL or "": open; else /v1/ routes want `Bearer KEY` (401) */
    bool reasoning_parser;     /* chats split <think> text into reasoning_content (reasoning.h) */
} folo_server_options;

typedef struct folo_server folo_server;

/* Starts the engine thread and the HTTP daemon. The engine is borrowed and
 * must outlive the server. */
folo_server *folo_server_start(folo_engine *engine, const folo_server_options *opt,
                               folo_error *err);
/* Stops accepting connections, aborts every request in flight, waits for
 * their last outputs, stops the engine thread and the daemon, frees all. */
void folo_server_stop(folo_server *s);

#endif
