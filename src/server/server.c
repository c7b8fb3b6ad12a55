/* The HTTP server of `folo serve` (see server.h for threads and lifetimes).
 *
 * Request flow on a connection thread: the body is gathered (at most
 * max_body_bytes, else 413), routed, parsed (openai.c), added to the engine;
 * the request's entry is then drained. A whole response waits for every
 * sample to finish; a stream is an MHD content reader that blocks until the
 * next events and writes them as SSE chunks, ending with `data: [DONE]`.
 * A waiting connection also polls its socket for a hang-up (MHD does not
 * watch a connection whose thread is busy in our code); when the client
 * goes away, MHD reports the request completed with an error and the
 * request is aborted in the engine. */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/timer.h"
#include "server/openai.h"

/* max_tokens of a chat request that gives none. */
#define CHAT_DEFAULT_MAX_TOKENS 2048
/* Seconds a shutdown waits for aborted requests to report their end. */
#define STOP_DRAIN_S 10
/* How often a connection waiting for tokens checks that its client is
 * still there (a request queued behind long prefills may wait for seconds). */
#define PEER_CHECK_MS 200

/* ---- the table of requests in flight ------------------------------------- */

/* What one folo_output brought, copied off the engine thread. */
typedef struct event {
    int sample;
    char *text;               /* [text_len], owned */
    size_t text_len;
    int n_tokens;
    int n_prompt_tokens;
    folo_finish_reason finish;
} event;

typedef struct entry {
    uint64_t id;
    event *events;            /* [n_events] not yet taken by the connection */
    int n_events, cap_events;
    int n_samples;            /* 0 until the connection registers it */
    int n_finished;           /* samples whose last output arrived */
    bool attached;            /* the connection still reads it */
    bool aborted;             /* the server's shutdown aborted it */
    pthread_cond_t wake;      /* new events, or the server is stopping */
    struct entry *next;
} entry;

struct folo_server {
    folo_engine *engine;
    struct MHD_Daemon *daemon;
    char *model_name;
    size_t max_body_bytes;
    folo_request_params defaults;
    unsigned nonce;           /* makes response ids unique across restarts */
    pthread_mutex_t lock;     /* guards everything below */
    pthread_cond_t drained;   /* an entry's engine side finished, or an entry was freed */
    entry *entries;
    bool closing;             /* refuse new requests */
    bool stopping;            /* the engine is stopped: readers end now */
};

static bool engine_done(const entry *e) {
    return e->n_samples > 0 && e->n_finished >= e->n_samples;
}

static void free_events(event *events, int n) {
    for (int i = 0; i < n; i++) free(events[i].text);
    free(events);
}

/* Lock held. */
static entry *find_or_add(folo_server *s, uint64_t id) {
    for (entry *e = s->entries; e; e = e->next)
        if (e->id == id) return e;
    entry *e = folo_calloc(1, sizeof *e);
    e->id = id;
    e->attached = true;
    pthread_cond_init(&e->wake, NULL);
    e->next = s->entries;
    s->entries = e;
    return e;
}

/* Lock held: frees e once neither side needs it. */
static void release_if_unused(folo_server *s, entry *e) {
    if (e->attached || !engine_done(e)) return;
    for (entry **p = &s->entries; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    free_events(e->events, e->n_events);
    pthread_cond_destroy(&e->wake);
    free(e);
    pthread_cond_broadcast(&s->drained);
}

/* One line per finished sample at info level (errors at error level):
 * request id, status, prompt and output tokens, TTFT and E2E. Written after
 * the server lock is released. */
static void log_finished(const folo_output *out) {
    unsigned long long id = (unsigned long long)out->request_id;
    if (out->finish_reason == FOLO_FINISH_ERROR) {
        folo_log(FOLO_LOG_ERROR, "serve: request %llu failed: %s", id,
                 out->error_message ? out->error_message : "unknown error");
        return;
    }
    static const char *names[] = {[FOLO_FINISH_STOP] = "stop", [FOLO_FINISH_LENGTH] = "length",
                                  [FOLO_FINISH_ABORT] = "abort"};
    const folo_request_metrics *m = out->metrics;
    folo_log(FOLO_LOG_INFO,
             "serve: request %llu sample %d finished (%s): prompt %d tokens, output %d tokens, "
             "TTFT %.1f ms, E2E %.1f ms",
             id, out->sample_index, names[out->finish_reason], out->n_prompt_tokens,
             m ? m->n_output_tokens : out->n_all_token_ids, m ? m->ttft_ms : 0.0,
             m ? m->e2e_ms : 0.0);
}

/* The engine thread's callback: copy, queue, signal; never waits on a
 * client. */
static void on_output(void *user, const folo_output *out) {
    folo_server *s = user;
    pthread_mutex_lock(&s->lock);
    entry *e = find_or_add(s, out->request_id);
    if (e->n_events == e->cap_events) {
        e->cap_events = e->cap_events ? 2 * e->cap_events : 16;
        e->events = folo_realloc(e->events, (size_t)e->cap_events * sizeof *e->events);
    }
    e->events[e->n_events++] = (event){
        .sample = out->sample_index,
        .text = folo_strndup(out->text, out->text_len),
        .text_len = out->text_len,
        .n_tokens = out->n_token_ids,
        .n_prompt_tokens = out->n_prompt_tokens,
        .finish = out->finish_reason,
    };
    if (out->finish_reason != FOLO_FINISH_NONE) e->n_finished++;
    pthread_cond_broadcast(&e->wake);
    if (engine_done(e)) {
        pthread_cond_broadcast(&s->drained);
        release_if_unused(s, e);
    }
    pthread_mutex_unlock(&s->lock);
    if (out->finish_reason != FOLO_FINISH_NONE) log_finished(out);
}

/* ---- one connection ------------------------------------------------------ */

typedef struct conn {
    folo_server *s;
    folo_buf body;
    bool too_large;
    /* the generation request, once added */
    entry *entry;
    folo_oai_kind kind;
    char id[64];
    int64_t created;
    int n_samples;
    bool include_usage;
    int fd;                   /* the client's socket, watched while waiting */
    bool peer_gone;           /* the client closed its end */
    double next_peer_check_s; /* folo_now_s of the next look at fd */
    /* per sample */
    folo_buf *texts;          /* [n_samples] whole responses only */
    folo_finish_reason *finish; /* [n_samples] */
    bool *started;            /* [n_samples] streams: the role chunk was sent */
    folo_oai_usage usage;
    int n_finished;
    /* stream output not yet handed to MHD */
    folo_buf out;
    size_t out_pos;
    bool stream_ended;
} conn;

static void conn_free(conn *c) {
    if (c->entry) {
        folo_server *s = c->s;
        pthread_mutex_lock(&s->lock);
        bool done = engine_done(c->entry);
        uint64_t id = c->entry->id;
        c->entry->attached = false;
        release_if_unused(s, c->entry);
        if (!done) folo_engine_abort(s->engine, id);
        pthread_mutex_unlock(&s->lock);
    }
    if (c->texts)
        for (int i = 0; i < c->n_samples; i++) folo_buf_free(&c->texts[i]);
    free(c->texts);
    free(c->finish);
    free(c->started);
    folo_buf_free(&c->body);
    folo_buf_free(&c->out);
    free(c);
}

/* Whether the client hung up: MHD does not look at a connection while its
 * thread waits here, so the socket is polled directly. */
static bool peer_gone(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Blocks until the entry has events, every sample ended, the server stops
 * or the client hangs up; takes the queued events. Returns false when
 * nothing more will come. */
static bool take_events(conn *c, event **events, int *n_events) {
    folo_server *s = c->s;
    entry *e = c->entry;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        double now_s = folo_now_s();
        if (c->fd >= 0 && now_s >= c->next_peer_check_s) {
            c->peer_gone = peer_gone(c->fd);
            c->next_peer_check_s = now_s + PEER_CHECK_MS * 1e-3;
        }
        if (e->n_events > 0 || engine_done(e) || s->stopping || c->peer_gone) break;
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += PEER_CHECK_MS * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&e->wake, &s->lock, &deadline);
    }
    *events = e->events;
    *n_events = e->n_events;
    e->events = NULL;
    e->n_events = e->cap_events = 0;
    bool more = *n_events > 0 || (!engine_done(e) && !s->stopping && !c->peer_gone);
    pthread_mutex_unlock(&s->lock);
    return more;
}

/* Usage and finish bookkeeping shared by both response kinds. */
static void account(conn *c, const event *ev) {
    c->usage.prompt_tokens = ev->n_prompt_tokens;
    c->usage.completion_tokens += ev->n_tokens;
    if (ev->finish != FOLO_FINISH_NONE) {
        c->finish[ev->sample] = ev->finish;
        c->n_finished++;
    }
}

static enum MHD_Result send_text(struct MHD_Connection *mc, unsigned status, const char *type,
                                 const char *text, size_t len) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result rc = MHD_queue_response(mc, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *mc, unsigned status, json_t *doc) {
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!text) return MHD_NO;
    enum MHD_Result rc = send_text(mc, status, "application/json", text, strlen(text));
    free(text);
    return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *mc, const folo_oai_error *err) {
    char *text = folo_oai_error_json(err);
    if (!text) return MHD_NO;
    enum MHD_Result rc =
        send_text(mc, (unsigned)err->status, "application/json", text, strlen(text));
    free(text);
    return rc;
}

static enum MHD_Result fail(struct MHD_Connection *mc, int status, const char *param,
                            const char *fmt, const char *arg) {
    folo_oai_error err;
    folo_oai_fail(&err, status, param, fmt, arg);
    return send_error(mc, &err);
}

static enum MHD_Result too_large(struct MHD_Connection *mc, const folo_server *s) {
    folo_oai_error err;
    folo_oai_fail(&err, 413, NULL, "the request body is larger than %zu bytes",
                  s->max_body_bytes);
    return send_error(mc, &err);
}

static enum MHD_Result respond_whole(struct MHD_Connection *mc, conn *c) {
    c->texts = folo_calloc((size_t)c->n_samples, sizeof *c->texts);
    event *events;
    int n_events;
    while (c->n_finished < c->n_samples && take_events(c, &events, &n_events)) {
        for (int i = 0; i < n_events; i++) {
            folo_buf_append(&c->texts[events[i].sample], events[i].text, events[i].text_len);
            account(c, &events[i]);
        }
        free_events(events, n_events);
    }
    folo_oai_choice *choices = folo_calloc((size_t)c->n_samples, sizeof *choices);
    bool failed = c->n_finished < c->n_samples;
    for (int i = 0; i < c->n_samples; i++) {
        failed |= c->finish[i] == FOLO_FINISH_ERROR;
        choices[i] = (folo_oai_choice){folo_buf_str(&c->texts[i]), c->texts[i].len, c->finish[i]};
    }
    enum MHD_Result rc;
    if (c->peer_gone)
        rc = MHD_NO;
    else if (failed)
        rc = fail(mc, 500, NULL, "%s", "the engine could not complete the request");
    else
        rc = send_json(mc, MHD_HTTP_OK,
                       folo_oai_response(c->kind, c->id, c->created, c->s->model_name, choices,
                                         c->n_samples, &c->usage));
    free(choices);
    return rc;
}

static void append_sse(folo_buf *out, json_t *doc) {
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!text) return;
    folo_buf_printf(out, "data: %s\n\n", text);
    free(text);
}

/* Turns the next events into SSE text in c->out; leaves it empty only
 * once the stream has ended or the client is gone. */
static void fill_stream(conn *c) {
    const char *model = c->s->model_name;
    while (c->out.len == 0 && !c->stream_ended && !c->peer_gone) {
        event *events;
        int n_events;
        bool more = c->n_finished < c->n_samples && take_events(c, &events, &n_events);
        if (more) {
            for (int i = 0; i < n_events; i++) {
                const event *ev = &events[i];
                account(c, ev);
                bool first = !c->started[ev->sample];
                if (ev->text_len == 0 && ev->finish == FOLO_FINISH_NONE &&
                    (c->kind != FOLO_OAI_CHAT || !first))
                    continue;
                c->started[ev->sample] = true;
                append_sse(&c->out, folo_oai_chunk(c->kind, c->id, c->created, model, ev->sample,
                                                   ev->text, ev->text_len, ev->finish,
                                                   first && c->kind == FOLO_OAI_CHAT,
                                                   c->include_usage));
            }
            free_events(events, n_events);
            continue;
        }
        if (c->peer_gone) break;
        if (c->include_usage)
            append_sse(&c->out,
                       folo_oai_usage_chunk(c->kind, c->id, c->created, model, &c->usage));
        folo_buf_puts(&c->out, "data: [DONE]\n\n");
        c->stream_ended = true;
    }
}

static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max) {
    conn *c = cls;
    if (c->out_pos == c->out.len) {
        folo_buf_clear(&c->out);
        c->out_pos = 0;
        fill_stream(c);
        if (c->peer_gone) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (c->out.len == 0) return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = c->out.len - c->out_pos;
    if (n > max) n = max;
    memcpy(buf, c->out.data + c->out_pos, n);
    c->out_pos += n;
    return (ssize_t)n;
}

static enum MHD_Result respond_stream(struct MHD_Connection *mc, conn *c) {
    c->started = folo_calloc((size_t)c->n_samples, sizeof *c->started);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_stream, c, NULL);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result rc = MHD_queue_response(mc, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result handle_generate(struct MHD_Connection *mc, conn *c, folo_oai_kind kind) {
    folo_server *s = c->s;
    folo_request_params defaults = s->defaults;
    defaults.max_tokens = kind == FOLO_OAI_CHAT ? CHAT_DEFAULT_MAX_TOKENS : FOLO_DEFAULT_MAX_TOKENS;
    folo_oai_request req;
    folo_oai_error err;
    if (folo_oai_parse(kind, folo_buf_str(&c->body), c->body.len, &defaults, &req, &err) != 0) {
        folo_oai_request_free(&req);
        return send_error(mc, &err);
    }
    if (req.model && strcmp(req.model, s->model_name) != 0) {
        folo_oai_fail(&err, 404, "model", "The model `%s` does not exist.", req.model);
        folo_oai_request_free(&req);
        return send_error(mc, &err);
    }
    uint64_t id = 0;
    folo_error ferr = {{0}};
    int rc = kind == FOLO_OAI_CHAT
                 ? folo_engine_add_chat(s->engine, folo_buf_str(&c->body), &req.params, &id, &ferr)
                 : folo_engine_add_text(s->engine, req.prompt, &req.params, &id, &ferr);
    c->kind = kind;
    c->n_samples = req.params.n > 0 ? req.params.n : 1;
    c->include_usage = req.include_usage;
    bool stream = req.stream;
    folo_oai_request_free(&req);
    if (rc != 0) return fail(mc, 400, NULL, "%s", ferr.message);

    pthread_mutex_lock(&s->lock);
    c->entry = find_or_add(s, id);
    c->entry->n_samples = c->n_samples;
    pthread_mutex_unlock(&s->lock);
    snprintf(c->id, sizeof c->id, "%s-%08x%016llx", kind == FOLO_OAI_CHAT ? "chatcmpl" : "cmpl",
             s->nonce, (unsigned long long)id);
    c->created = (int64_t)time(NULL);
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = info ? info->connect_fd : -1;
    c->finish = folo_calloc((size_t)c->n_samples, sizeof *c->finish);
    return stream ? respond_stream(mc, c) : respond_whole(mc, c);
}

static enum MHD_Result handle_models(struct MHD_Connection *mc, folo_server *s) {
    json_t *model = json_pack("{s:s, s:s, s:I, s:s}", "id", s->model_name, "object", "model",
                              "created", (json_int_t)time(NULL), "owned_by", "folo");
    return send_json(mc, MHD_HTTP_OK, json_pack("{s:s, s:[o]}", "object", "list", "data", model));
}

static enum MHD_Result route(struct MHD_Connection *mc, conn *c, const char *url,
                             const char *method) {
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    bool completions = strcmp(url, "/v1/completions") == 0;
    bool chat = strcmp(url, "/v1/chat/completions") == 0;
    if (strcmp(url, "/health") == 0 || strcmp(url, "/v1/models") == 0) {
        if (!get) return fail(mc, 405, NULL, "method %s is not allowed here", method);
        if (url[1] == 'h') return send_text(mc, MHD_HTTP_OK, "text/plain", "", 0);
        return handle_models(mc, c->s);
    }
    if (!completions && !chat) return fail(mc, 404, NULL, "no route %s", url);
    if (!post) return fail(mc, 405, NULL, "method %s is not allowed here", method);
    if (c->too_large) return too_large(mc, c->s);
    pthread_mutex_lock(&c->s->lock);
    bool closing = c->s->closing;
    pthread_mutex_unlock(&c->s->lock);
    if (closing) return fail(mc, 503, NULL, "%s", "the server is shutting down");
    return handle_generate(mc, c, chat ? FOLO_OAI_CHAT : FOLO_OAI_COMPLETION);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    folo_server *s = cls;
    conn *c = *con_cls;
    if (!c) {
        c = folo_calloc(1, sizeof *c);
        c->s = s;
        *con_cls = c;
        const char *length =
            MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, NULL, 10) > s->max_body_bytes) {
            c->too_large = true;
            return too_large(mc, s);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!c->too_large && c->body.len + *upload_data_size > s->max_body_bytes) {
            c->too_large = true;
            folo_buf_free(&c->body);
        }
        if (!c->too_large) folo_buf_append(&c->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    return route(mc, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    conn *c = *con_cls;
    if (!c) return;
    if (c->entry && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        folo_log(FOLO_LOG_INFO, "serve: client of request %s went away; aborting it", c->id);
    conn_free(c);
    *con_cls = NULL;
}

/* ---- start and stop ------------------------------------------------------ */

static int resolve(const char *host, int port, struct sockaddr_in *addr, folo_error *err) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res)
        return folo_fail(err, "--host: cannot resolve %s: %s", host, gai_strerror(rc));
    memcpy(addr, res->ai_addr, sizeof *addr);
    addr->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

folo_server *folo_server_start(folo_engine *engine, const folo_server_options *opt,
                               folo_error *err) {
    struct sockaddr_in addr;
    const char *host = opt->host ? opt->host : "127.0.0.1";
    int port = opt->port > 0 ? opt->port : 8000;
    if (resolve(host, port, &addr, err) != 0) return NULL;
    folo_server *s = folo_calloc(1, sizeof *s);
    s->engine = engine;
    s->model_name = folo_strdup(opt->model_name ? opt->model_name : "folo");
    s->max_body_bytes = opt->max_body_bytes ? opt->max_body_bytes : FOLO_SERVER_MAX_BODY_BYTES;
    s->defaults = folo_engine_default_params(engine);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    s->nonce = (unsigned)(now.tv_nsec ^ (now.tv_sec << 16) ^ (unsigned)getpid());
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->drained, NULL);
    if (folo_engine_start(engine, on_output, s, err) != 0) {
        folo_server_stop(s);
        return NULL;
    }
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC, 0, NULL,
        NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)1024, MHD_OPTION_END);
    if (!s->daemon) {
        folo_fail(err, "cannot listen on %s:%d (%s)", host, port, strerror(errno));
        folo_server_stop(s);
        return NULL;
    }
    return s;
}

void folo_server_stop(folo_server *s) {
    if (!s) return;
    if (s->daemon) {
        MHD_socket listen_fd = MHD_quiesce_daemon(s->daemon);
        if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    }
    /* Abort what is in flight and let each connection write its last
     * chunk (the daemon's stop closes sockets at once). */
    pthread_mutex_lock(&s->lock);
    s->closing = true;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += STOP_DRAIN_S;
    while (s->entries) {
        for (entry *e = s->entries; e; e = e->next)
            if (!engine_done(e) && !e->aborted) {
                folo_engine_abort(s->engine, e->id);
                e->aborted = true;
            }
        if (pthread_cond_timedwait(&s->drained, &s->lock, &deadline) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&s->lock);
    folo_engine_stop(s->engine);
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    for (entry *e = s->entries; e; e = e->next) pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&s->lock);
    if (s->daemon) MHD_stop_daemon(s->daemon);
    while (s->entries) {
        entry *e = s->entries;
        s->entries = e->next;
        free_events(e->events, e->n_events);
        pthread_cond_destroy(&e->wake);
        free(e);
    }
    pthread_cond_destroy(&s->drained);
    pthread_mutex_destroy(&s->lock);
    free(s->model_name);
    free(s);
}
