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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/gpu_stats.h"
#include "core/log.h"
#include "core/timer.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/reasoning.h"

/* max_tokens of a chat request that gives none. */
#define CHAT_DEFAULT_MAX_TOKENS 2048
/* Seconds a shutdown waits for aborted requests to report their end. */
#define STOP_DRAIN_S 10
/* How often a connection waiting for tokens checks that its client is
 * still there (a request queued behind long prefills may wait for seconds). */
#define PEER_CHECK_MS 200
/* Seconds a client refused by --max-queue is told to wait (Retry-After). */
#define RETRY_AFTER_S "1"
/* Open files kept apart from connections (model, tokenizer, logs, NVML). */
#define RESERVED_FDS 64

/* ---- the table of requests in flight ------------------------------------- */

/* What one folo_output brought, copied off the engine thread. */
typedef struct event {
    int choice;               /* prompt index x n + sample index */
    char *text;               /* [text_len], owned */
    size_t text_len;
    int n_tokens;
    folo_sample_result *lps;  /* [n_lps], owned: the logprobs of the tokens `text` is the
                                 text of (folo_output.logprobs) */
    int n_lps;
    folo_finish_reason finish;
} event;

/* One connection's generation: an engine request per prompt (completions
 * take several), registered before any of them is added, so every output
 * finds its entry. */
typedef struct entry {
    uint64_t *ids;            /* [n_ids] engine request ids, one per prompt */
    int n_ids;
    int n_per_prompt;         /* samples per prompt (n) */
    event *events;            /* [n_events] not yet taken by the connection */
    int n_events, cap_events;
    folo_sample_result **prompt_lps; /* [n_ids][n_prompt_lps[i]], owned: each prompt's
                                        scores once they came (prompt logprobs) */
    int *n_prompt_lps;
    int n_samples;            /* n_ids x n_per_prompt once every prompt is added, else 0 */
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
    char *api_key;            /* NULL: no authentication */
    bool reasoning_parser;    /* --reasoning-parser qwen3 */
    pthread_mutex_t metrics_lock; /* guards metrics (engine thread and scrapes) */
    folo_metrics metrics;
    folo_gpu_stats *gpu;      /* sampled by each scrape; no device without NVML */
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
    for (int i = 0; i < n; i++) {
        free(events[i].text);
        free(events[i].lps);
    }
    free(events);
}

/* Lock held: the entry of engine request id and that request's prompt
 * index, or NULL (a request whose connection gave up adding it). */
static entry *find_entry(folo_server *s, uint64_t id, int *prompt) {
    for (entry *e = s->entries; e; e = e->next)
        for (int i = 0; i < e->n_ids; i++)
            if (e->ids[i] == id) {
                *prompt = i;
                return e;
            }
    return NULL;
}

/* Lock held. */
static entry *add_entry(folo_server *s, int n_prompts, int n_per_prompt) {
    entry *e = folo_calloc(1, sizeof *e);
    e->ids = folo_calloc((size_t)n_prompts, sizeof *e->ids);
    e->prompt_lps = folo_calloc((size_t)n_prompts, sizeof *e->prompt_lps);
    e->n_prompt_lps = folo_calloc((size_t)n_prompts, sizeof *e->n_prompt_lps);
    e->n_per_prompt = n_per_prompt;
    e->attached = true;
    pthread_cond_init(&e->wake, NULL);
    e->next = s->entries;
    s->entries = e;
    return e;
}

static void free_entry(entry *e) {
    free_events(e->events, e->n_events);
    pthread_cond_destroy(&e->wake);
    for (int i = 0; i < e->n_ids; i++) free(e->prompt_lps[i]);
    free(e->prompt_lps);
    free(e->n_prompt_lps);
    free(e->ids);
    free(e);
}

/* Lock held: unlinks and frees e. */
static void remove_entry(folo_server *s, entry *e) {
    for (entry **p = &s->entries; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    free_entry(e);
    pthread_cond_broadcast(&s->drained);
}

/* Lock held: frees e once neither side needs it. */
static void release_if_unused(folo_server *s, entry *e) {
    if (e->attached || !engine_done(e)) return;
    remove_entry(s, e);
}

/* Lock held: aborts every engine request of e. */
static void abort_entry(folo_server *s, entry *e) {
    for (int i = 0; i < e->n_ids; i++) folo_engine_abort(s->engine, e->ids[i]);
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

/* An owned copy of rs [n] (NULL when n is 0). */
static folo_sample_result *copy_results(const folo_sample_result *rs, int n) {
    if (n <= 0) return NULL;
    folo_sample_result *copy = folo_calloc((size_t)n, sizeof *copy);
    memcpy(copy, rs, (size_t)n * sizeof *copy);
    return copy;
}

/* The engine thread's callback: copy, queue, signal; never waits on a
 * client. */
static void on_output(void *user, const folo_output *out) {
    folo_server *s = user;
    pthread_mutex_lock(&s->lock);
    int prompt = 0;
    entry *e = find_entry(s, out->request_id, &prompt);
    if (e) {
        if (e->n_events == e->cap_events) {
            e->cap_events = e->cap_events ? 2 * e->cap_events : 16;
            e->events = folo_realloc(e->events, (size_t)e->cap_events * sizeof *e->events);
        }
        event *ev = &e->events[e->n_events++];
        *ev = (event){
            .choice = prompt * e->n_per_prompt + out->sample_index,
            .text = folo_strndup(out->text, out->text_len),
            .text_len = out->text_len,
            .n_tokens = out->n_token_ids,
            .lps = copy_results(out->logprobs, out->n_logprobs),
            .n_lps = out->n_logprobs,
            .finish = out->finish_reason,
        };
        /* Every sample brings the same scores of its prompt: keep one. */
        if (out->prompt_logprobs && !e->prompt_lps[prompt]) {
            e->prompt_lps[prompt] = copy_results(out->prompt_logprobs, out->n_prompt_tokens);
            e->n_prompt_lps[prompt] = out->n_prompt_tokens;
        }
        if (out->finish_reason != FOLO_FINISH_NONE) e->n_finished++;
        pthread_cond_broadcast(&e->wake);
        if (engine_done(e)) {
            pthread_cond_broadcast(&s->drained);
            release_if_unused(s, e);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (out->finish_reason == FOLO_FINISH_NONE) return;
    if (out->metrics) {
        pthread_mutex_lock(&s->metrics_lock);
        folo_metrics_observe_finished(&s->metrics, out->metrics, out->finish_reason);
        pthread_mutex_unlock(&s->metrics_lock);
    }
    log_finished(out);
}

/* The engine thread's step hook: the histogram of tokens per step. */
static void on_step(void *user, int n_tokens) {
    folo_server *s = user;
    pthread_mutex_lock(&s->metrics_lock);
    folo_metrics_observe_step(&s->metrics, n_tokens);
    pthread_mutex_unlock(&s->metrics_lock);
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
    int n_prompts;
    int n_samples;            /* choices: prompts x n */
    bool include_usage;
    int logprobs;             /* top logprobs asked for; < 0: none */
    char **echo;              /* [n_prompts] completions with echo: the prompt text, else NULL */
    bool echo_only;           /* echo with max_tokens 0: the generated token is not returned */
    bool echo_logprobs;       /* echo with logprobs: they list the prompt's tokens first */
    int prompt_top;           /* vLLM's prompt_logprobs member with this many top
                                 alternatives (the field, else echo's logprobs); < 0: none */
    int fd;                   /* the client's socket, watched while waiting */
    bool peer_gone;           /* the client closed its end */
    double next_peer_check_s; /* folo_now_s of the next look at fd */
    /* per choice */
    folo_buf *texts;          /* [n_samples] whole responses only */
    folo_sample_result **lps; /* [n_samples][n_lps[i]] with logprobs: not yet written (a
                                 stream's wait for the next chunk with text) */
    int *n_lps;
    size_t *text_offset;      /* [n_samples] streams with logprobs: text so far */
    folo_finish_reason *finish; /* [n_samples] */
    bool *started;            /* [n_samples] streams: the role chunk was sent */
    folo_reasoning *reasoning; /* [n_samples] chats with a reasoning parser, else NULL */
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
        /* Still generating when the connection ends: the client left. */
        bool gone = !engine_done(c->entry);
        if (gone) abort_entry(s, c->entry);
        c->entry->attached = false;
        release_if_unused(s, c->entry);
        pthread_mutex_unlock(&s->lock);
        if (gone)
            folo_log(FOLO_LOG_INFO, "serve: client of request %s went away; aborting it", c->id);
    }
    for (int i = 0; c->texts && i < c->n_samples; i++) folo_buf_free(&c->texts[i]);
    for (int i = 0; c->lps && i < c->n_samples; i++) free(c->lps[i]);
    for (int i = 0; c->echo && i < c->n_prompts; i++) free(c->echo[i]);
    free(c->echo);
    free(c->lps);
    free(c->n_lps);
    free(c->text_offset);
    free(c->texts);
    free(c->finish);
    free(c->started);
    if (c->reasoning)
        for (int i = 0; i < c->n_samples; i++) folo_reasoning_free(&c->reasoning[i]);
    free(c->reasoning);
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
    if (!c->echo_only) c->usage.completion_tokens += ev->n_tokens;
    if (c->logprobs >= 0 && !c->echo_only && ev->n_lps > 0) {
        int *n = &c->n_lps[ev->choice];
        c->lps[ev->choice] =
            folo_realloc(c->lps[ev->choice], (size_t)(*n + ev->n_lps) * sizeof **c->lps);
        memcpy(c->lps[ev->choice] + *n, ev->lps, (size_t)ev->n_lps * sizeof **c->lps);
        *n += ev->n_lps;
    }
    if (ev->finish != FOLO_FINISH_NONE) {
        c->finish[ev->choice] = ev->finish;
        c->n_finished++;
    }
}

/* toks [n] from rs [n]: each token's text and its top (at most `top`)
 * alternatives', from the tokenizer with special tokens kept (allocated:
 * free_tokens); with first_none the first has no logprob (a prompt's). */
static void fill_tokens(folo_engine *e, const folo_sample_result *rs, int n, int top,
                        bool first_none, folo_oai_token *toks) {
    for (int i = 0; i < n; i++) {
        folo_oai_token *t = &toks[i];
        t->id = rs[i].token;
        t->text = folo_engine_detokenize(e, &rs[i].token, 1, false);
        t->none = first_none && i == 0;
        t->logprob = rs[i].logprob;
        t->rank = rs[i].rank;
        t->n_top = t->none ? 0 : rs[i].n_top < top ? rs[i].n_top : top;
        for (int j = 0; j < t->n_top; j++) {
            t->top_id[j] = rs[i].top[j].token;
            t->top_text[j] = folo_engine_detokenize(e, &rs[i].top[j].token, 1, false);
            t->top_logprob[j] = rs[i].top[j].logprob;
        }
    }
}

static void free_tokens(folo_oai_token *toks, int n) {
    for (int i = 0; i < n; i++) {
        free((char *)toks[i].text);
        for (int j = 0; j < toks[i].n_top; j++) free((char *)toks[i].top_text[j]);
    }
    free(toks);
}

/* The logprobs member of a prompt's [n_prompt] scored tokens (echo) then
 * [n] sampled ones; *text_offset as folo_oai_logprobs. */
static json_t *logprobs_json(conn *c, const folo_sample_result *prompt, int n_prompt,
                             const folo_sample_result *rs, int n, size_t *text_offset) {
    int total = n_prompt + n;
    folo_oai_token *toks = folo_calloc(total > 0 ? (size_t)total : 1, sizeof *toks);
    fill_tokens(c->s->engine, prompt, n_prompt, c->logprobs, true, toks);
    fill_tokens(c->s->engine, rs, n, c->logprobs, false, toks + n_prompt);
    json_t *doc = folo_oai_logprobs(c->kind, toks, total, text_offset);
    free_tokens(toks, total);
    return doc;
}

/* The scores of the prompt of a choice ([*n]), NULL until they came. */
static const folo_sample_result *prompt_scores(const conn *c, int choice, int *n) {
    int prompt = choice / (c->n_samples / c->n_prompts);
    *n = c->entry->n_prompt_lps[prompt];
    return c->entry->prompt_lps[prompt];
}

/* vLLM's prompt_logprobs member for a choice, NULL when not asked for (or
 * its prompt's scores never came: the request ended before its first
 * token). */
static json_t *prompt_logprobs_json(conn *c, int choice) {
    int n;
    const folo_sample_result *scores = prompt_scores(c, choice, &n);
    if (c->prompt_top < 0 || !scores) return NULL;
    folo_oai_token *toks = folo_calloc((size_t)n, sizeof *toks);
    fill_tokens(c->s->engine, scores, n, c->prompt_top, true, toks);
    json_t *doc = folo_oai_prompt_logprobs(toks, n);
    free_tokens(toks, n);
    return doc;
}

/* The prompt text a choice starts with under echo ("" without). */
static const char *echo_of(const conn *c, int choice) {
    return c->echo ? c->echo[choice / (c->n_samples / c->n_prompts)] : "";
}

/* header and value name one more response header, or are NULL. */
static enum MHD_Result send_with(struct MHD_Connection *mc, unsigned status, const char *type,
                                 const char *text, size_t len, const char *header,
                                 const char *value) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (header) MHD_add_response_header(r, header, value);
    enum MHD_Result rc = MHD_queue_response(mc, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_text(struct MHD_Connection *mc, unsigned status, const char *type,
                                 const char *text, size_t len) {
    return send_with(mc, status, type, text, len, NULL, NULL);
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
    bool busy = err->status == MHD_HTTP_SERVICE_UNAVAILABLE;
    enum MHD_Result rc =
        send_with(mc, (unsigned)err->status, "application/json", text, strlen(text),
                  busy ? MHD_HTTP_HEADER_RETRY_AFTER : NULL, busy ? RETRY_AFTER_S : NULL);
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

/* The text of one sample's delta (or whole answer, last = true), split by
 * the reasoning parser when there is one; out points into the two bufs. */
static void split_text(conn *c, int sample, const char *text, size_t len, bool last,
                       folo_buf *reasoning, folo_buf *content, folo_oai_text *out) {
    if (!c->reasoning) {
        *out = (folo_oai_text){.text = text, .text_len = len};
        return;
    }
    folo_reasoning_feed(&c->reasoning[sample], text, len, last, reasoning, content);
    *out = (folo_oai_text){folo_buf_str(content), content->len, folo_buf_str(reasoning),
                           reasoning->len};
}

static enum MHD_Result respond_whole(struct MHD_Connection *mc, conn *c) {
    size_t n = (size_t)c->n_samples;
    c->texts = folo_calloc(n, sizeof *c->texts);
    c->lps = folo_calloc(n, sizeof *c->lps);
    c->n_lps = folo_calloc(n, sizeof *c->n_lps);
    for (int i = 0; i < c->n_samples; i++) folo_buf_puts(&c->texts[i], echo_of(c, i));
    event *events;
    int n_events;
    while (c->n_finished < c->n_samples && take_events(c, &events, &n_events)) {
        for (int i = 0; i < n_events; i++) {
            const event *ev = &events[i];
            if (!c->echo_only) folo_buf_append(&c->texts[ev->choice], ev->text, ev->text_len);
            account(c, ev);
        }
        free_events(events, n_events);
    }
    bool failed = c->n_finished < c->n_samples;
    for (int i = 0; i < c->n_samples; i++) failed |= c->finish[i] == FOLO_FINISH_ERROR;
    if (c->peer_gone) return MHD_NO;
    if (failed) return fail(mc, 500, NULL, "%s", "the engine could not complete the request");
    folo_oai_choice *choices = folo_calloc(n, sizeof *choices);
    /* [2 * n_samples]: each choice's reasoning and content */
    folo_buf *parts = folo_calloc(2 * n, sizeof *parts);
    for (int i = 0; i < c->n_samples; i++) {
        split_text(c, i, folo_buf_str(&c->texts[i]), c->texts[i].len, true, &parts[2 * i],
                   &parts[2 * i + 1], &choices[i].text);
        size_t offset = 0;
        int n_prompt = 0;
        const folo_sample_result *prompt = prompt_scores(c, i, &n_prompt);
        if (!c->echo_logprobs || !prompt) n_prompt = 0;
        if (c->logprobs >= 0)
            choices[i].logprobs = logprobs_json(c, prompt, n_prompt, c->lps[i], c->n_lps[i],
                                                &offset);
        if (c->kind == FOLO_OAI_COMPLETION || i == 0)
            choices[i].prompt_logprobs = prompt_logprobs_json(c, i);
        choices[i].finish = c->finish[i];
    }
    enum MHD_Result rc =
        send_json(mc, MHD_HTTP_OK,
                  folo_oai_response(c->kind, c->id, c->created, c->s->model_name, choices,
                                    c->n_samples, &c->usage));
    for (int i = 0; i < 2 * c->n_samples; i++) folo_buf_free(&parts[i]);
    free(parts);
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
    folo_buf reasoning = {0}, content = {0};
    while (c->out.len == 0 && !c->stream_ended && !c->peer_gone) {
        event *events;
        int n_events;
        bool more = c->n_finished < c->n_samples && take_events(c, &events, &n_events);
        if (more) {
            for (int i = 0; i < n_events; i++) {
                const event *ev = &events[i];
                int ch = ev->choice;
                account(c, ev);
                bool first = !c->started[ch];
                folo_oai_text text;
                folo_buf_clear(&reasoning);
                folo_buf_clear(&content);
                const char *gen = c->echo_only ? "" : ev->text;
                size_t gen_len = c->echo_only ? 0 : ev->text_len;
                if (first && c->echo) {
                    /* The prompt leads the choice's first chunk, as in vLLM. */
                    folo_buf_puts(&content, echo_of(c, ch));
                    folo_buf_append(&content, gen, gen_len);
                    text = (folo_oai_text){.text = content.data, .text_len = content.len};
                } else {
                    split_text(c, ch, gen, gen_len, ev->finish != FOLO_FINISH_NONE, &reasoning,
                               &content, &text);
                }
                /* Logprobs go with the text of their tokens: those of text
                 * the reasoning parser holds back wait for it. */
                bool has_text = text.text_len > 0 || text.reasoning_len > 0;
                if (!has_text && ev->finish == FOLO_FINISH_NONE &&
                    (c->kind != FOLO_OAI_CHAT || !first))
                    continue;
                c->started[ch] = true;
                int n_prompt = 0;
                const folo_sample_result *prompt = prompt_scores(c, ch, &n_prompt);
                if (!first || !c->echo_logprobs || !prompt) n_prompt = 0;
                bool with_lps = has_text || ev->finish != FOLO_FINISH_NONE;
                int n_lps = with_lps ? c->n_lps[ch] : 0;
                json_t *lp = c->logprobs >= 0 && n_prompt + n_lps > 0
                                 ? logprobs_json(c, prompt, n_prompt, c->lps[ch], n_lps,
                                                 &c->text_offset[ch])
                                 : NULL;
                if (with_lps) c->n_lps[ch] = 0;
                append_sse(&c->out, folo_oai_chunk(c->kind, c->id, c->created, model, ch,
                                                   &text, lp, ev->finish,
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
    folo_buf_free(&reasoning);
    folo_buf_free(&content);
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
    c->lps = folo_calloc((size_t)c->n_samples, sizeof *c->lps);
    c->n_lps = folo_calloc((size_t)c->n_samples, sizeof *c->n_lps);
    c->text_offset = folo_calloc((size_t)c->n_samples, sizeof *c->text_offset);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_stream, c, NULL);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result rc = MHD_queue_response(mc, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

/* The token ids of each prompt, tokenized here: on the connection's thread
 * and outside the server lock (adding them then only validates and
 * queues). */
static int tokenize_prompts(conn *c, const folo_oai_request *req, int32_t **ids, int *n_ids,
                            folo_error *err) {
    folo_engine *e = c->s->engine;
    for (int p = 0; p < c->n_prompts; p++) {
        const folo_oai_prompt *pr = req->kind == FOLO_OAI_CHAT ? NULL : &req->prompts[p];
        int rc = !pr ? folo_engine_tokenize_chat(e, folo_buf_str(&c->body), &ids[p], &n_ids[p],
                                                 err)
                 : pr->text ? folo_engine_tokenize_text(e, pr->text, &ids[p], &n_ids[p], err)
                            : 0;
        if (rc != 0) return -1;
        if (pr && !pr->text) {
            ids[p] = folo_calloc((size_t)pr->n_ids, sizeof **ids);
            memcpy(ids[p], pr->ids, (size_t)pr->n_ids * sizeof **ids);
            n_ids[p] = pr->n_ids;
        }
    }
    return 0;
}

/* Adds every prompt to the engine under the server lock, after
 * registering their entry, so that the first output of any of them finds
 * it. On a refusal the prompts already added are aborted. Returns 0, -1,
 * or FOLO_ERR_QUEUE_FULL (--max-queue). */
static int add_prompts(conn *c, const folo_request_params *params, int32_t *const *ids,
                       const int *n_ids, folo_error *err) {
    folo_server *s = c->s;
    pthread_mutex_lock(&s->lock);
    entry *e = add_entry(s, c->n_prompts, c->n_samples / c->n_prompts);
    int rc = 0;
    for (int p = 0; p < c->n_prompts && rc == 0; p++) {
        rc = folo_engine_add_tokens(s->engine, ids[p], n_ids[p], params, &e->ids[p], err);
        if (rc == 0) e->n_ids++;
        else if (c->n_prompts > 1) folo_fail_prefix(err, "prompt[%d]", p);
    }
    if (rc == 0) {
        e->n_samples = c->n_samples;
        c->entry = e;
    } else {
        abort_entry(s, e);
        remove_entry(s, e);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* A request naming another model than the one served is 404, as in vLLM. */
static int check_model(const folo_server *s, const char *model, folo_oai_error *err) {
    if (model && strcmp(model, s->model_name) != 0)
        return folo_oai_fail(err, 404, "model", "The model `%s` does not exist.", model);
    return 0;
}

static enum MHD_Result handle_generate(struct MHD_Connection *mc, conn *c, folo_oai_kind kind) {
    folo_server *s = c->s;
    folo_request_params defaults = s->defaults;
    defaults.max_tokens = kind == FOLO_OAI_CHAT ? CHAT_DEFAULT_MAX_TOKENS : FOLO_DEFAULT_MAX_TOKENS;
    folo_oai_request req;
    folo_oai_error err;
    if (folo_oai_parse(kind, folo_buf_str(&c->body), c->body.len,
                       folo_engine_vocab_size(s->engine), &defaults, &req, &err) != 0 ||
        check_model(s, req.model, &err) != 0) {
        folo_oai_request_free(&req);
        return send_error(mc, &err);
    }
    c->kind = kind;
    c->n_prompts = kind == FOLO_OAI_CHAT ? 1 : req.n_prompts;
    int n = req.params.n > 0 ? req.params.n : 1;
    c->n_samples = c->n_prompts * n;
    c->include_usage = req.include_usage;
    c->logprobs = req.params.sampling.logprobs;
    c->echo_only = req.echo_only;
    c->echo_logprobs = req.echo && c->logprobs >= 0;
    c->prompt_top = req.prompt_logprobs >= 0 ? req.prompt_logprobs
                    : c->echo_logprobs        ? c->logprobs
                                              : -1;
    folo_error ferr = {{0}};
    int32_t **ids = folo_calloc((size_t)c->n_prompts, sizeof *ids);
    int *n_ids = folo_calloc((size_t)c->n_prompts, sizeof *n_ids);
    int rc = tokenize_prompts(c, &req, ids, n_ids, &ferr);
    if (rc == 0) rc = add_prompts(c, &req.params, ids, n_ids, &ferr);
    if (rc == 0 && req.echo) {
        c->echo = folo_calloc((size_t)c->n_prompts, sizeof *c->echo);
        for (int p = 0; p < c->n_prompts; p++)
            c->echo[p] = req.prompts[p].text ? folo_strdup(req.prompts[p].text)
                                             : folo_engine_detokenize(s->engine, ids[p],
                                                                      n_ids[p], false);
    }
    for (int p = 0; p < c->n_prompts; p++) {
        c->usage.prompt_tokens += n_ids[p];
        free(ids[p]);
    }
    free(ids);
    free(n_ids);
    if (kind == FOLO_OAI_CHAT && s->reasoning_parser) {
        c->reasoning = folo_calloc((size_t)c->n_samples, sizeof *c->reasoning);
        for (int i = 0; i < c->n_samples; i++)
            folo_reasoning_init(&c->reasoning[i], req.enable_thinking);
    }
    bool stream = req.stream;
    folo_oai_request_free(&req);
    if (rc != 0) return fail(mc, rc == FOLO_ERR_QUEUE_FULL ? 503 : 400, NULL, "%s", ferr.message);

    snprintf(c->id, sizeof c->id, "%s-%08x%016llx", kind == FOLO_OAI_CHAT ? "chatcmpl" : "cmpl",
             s->nonce, (unsigned long long)c->entry->ids[0]);
    c->created = (int64_t)time(NULL);
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = info ? info->connect_fd : -1;
    c->finish = folo_calloc((size_t)c->n_samples, sizeof *c->finish);
    return stream ? respond_stream(mc, c) : respond_whole(mc, c);
}

/* POST /tokenize: {count, max_model_len, tokens, token_strs} as vLLM. */
static enum MHD_Result handle_tokenize(struct MHD_Connection *mc, conn *c) {
    folo_server *s = c->s;
    folo_oai_tokenize req;
    folo_oai_error err;
    int32_t *ids = NULL;
    int n_ids = 0;
    folo_error ferr = {{0}};
    enum MHD_Result rc;
    if (folo_oai_parse_tokenize(folo_buf_str(&c->body), c->body.len, &req, &err) != 0 ||
        check_model(s, req.model, &err) != 0) {
        rc = send_error(mc, &err);
    } else if ((req.chat ? folo_engine_tokenize_chat(s->engine, folo_buf_str(&c->body), &ids,
                                                     &n_ids, &ferr)
                         : folo_engine_tokenize_text(s->engine, req.prompt, &ids, &n_ids,
                                                     &ferr)) != 0) {
        rc = fail(mc, 400, NULL, "%s", ferr.message);
    } else {
        json_t *tokens = json_array();
        for (int i = 0; i < n_ids; i++) json_array_append_new(tokens, json_integer(ids[i]));
        rc = send_json(mc, MHD_HTTP_OK,
                       json_pack("{s:i, s:i, s:o, s:n}", "count", n_ids, "max_model_len",
                                 folo_engine_max_model_len(s->engine), "tokens", tokens,
                                 "token_strs"));
    }
    free(ids);
    json_decref(req.root);
    return rc;
}

/* POST /detokenize: {"prompt": text} of the ids, special tokens kept (as
 * vLLM's tokenizer.decode). */
static enum MHD_Result handle_detokenize(struct MHD_Connection *mc, conn *c) {
    folo_server *s = c->s;
    folo_oai_detokenize req;
    folo_oai_error err;
    enum MHD_Result rc;
    if (folo_oai_parse_detokenize(folo_buf_str(&c->body), c->body.len,
                                  folo_engine_vocab_size(s->engine), &req, &err) != 0 ||
        check_model(s, req.model, &err) != 0) {
        rc = send_error(mc, &err);
    } else {
        char *text = folo_engine_detokenize(s->engine, req.ids, req.n_ids, false);
        rc = send_json(mc, MHD_HTTP_OK, json_pack("{s:s}", "prompt", text));
        free(text);
    }
    folo_oai_detokenize_free(&req);
    return rc;
}

static enum MHD_Result handle_models(struct MHD_Connection *mc, folo_server *s) {
    json_t *model = json_pack("{s:s, s:s, s:I, s:s}", "id", s->model_name, "object", "model",
                              "created", (json_int_t)time(NULL), "owned_by", "folo");
    return send_json(mc, MHD_HTTP_OK, json_pack("{s:s, s:[o]}", "object", "list", "data", model));
}

static enum MHD_Result handle_metrics(struct MHD_Connection *mc, folo_server *s) {
    folo_engine_stats st;
    folo_engine_get_stats(s->engine, &st);
    folo_process_stats ps;
    bool have_ps = folo_process_stats_read(&ps) == 0;
    /* A device that fails to answer is left out of this scrape. */
    int n_gpus = 0;
    folo_gpu_sample *gpus = folo_calloc((size_t)folo_gpu_stats_count(s->gpu), sizeof *gpus);
    for (int i = 0; i < folo_gpu_stats_count(s->gpu); i++)
        if (folo_gpu_stats_sample(s->gpu, i, &gpus[n_gpus], NULL) == 0) n_gpus++;
    folo_buf text = {0};
    pthread_mutex_lock(&s->metrics_lock);
    folo_metrics_render(&s->metrics, s->model_name, &st, have_ps ? &ps : NULL, gpus, n_gpus,
                        &text);
    pthread_mutex_unlock(&s->metrics_lock);
    free(gpus);
    enum MHD_Result rc = send_text(mc, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                                   folo_buf_str(&text), text.len);
    folo_buf_free(&text);
    return rc;
}

/* Whether given equals key, in a time that depends on given's length only
 * (never on how many leading bytes match). key is not empty. */
static bool same_secret(const char *given, const char *key) {
    size_t n_given = strlen(given), n_key = strlen(key);
    unsigned diff = n_given != n_key;
    for (size_t i = 0; i < n_given; i++)
        diff |= (unsigned char)given[i] ^ (unsigned char)key[i % n_key];
    return diff == 0;
}

/* --api-key: the /v1 routes want `Authorization: Bearer KEY`, as vLLM's. */
static bool authorized(struct MHD_Connection *mc, const folo_server *s) {
    if (!s->api_key) return true;
    const char *auth =
        MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    static const char k_bearer[] = "Bearer ";
    return auth && strncmp(auth, k_bearer, sizeof k_bearer - 1) == 0 &&
           same_secret(auth + sizeof k_bearer - 1, s->api_key);
}

static enum MHD_Result route(struct MHD_Connection *mc, conn *c, const char *url,
                             const char *method) {
    folo_server *s = c->s;
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    bool completions = strcmp(url, "/v1/completions") == 0;
    bool chat = strcmp(url, "/v1/chat/completions") == 0;
    bool models = strcmp(url, "/v1/models") == 0;
    if (strncmp(url, "/v1/", 4) == 0 && !authorized(mc, s))
        return fail(mc, 401, NULL, "%s", "invalid or missing API key (Authorization: Bearer)");
    if (strcmp(url, "/health") == 0 || strcmp(url, "/metrics") == 0 || models) {
        if (!get) return fail(mc, 405, NULL, "method %s is not allowed here", method);
        if (models) return handle_models(mc, s);
        if (url[1] == 'm') return handle_metrics(mc, s);
        return send_text(mc, MHD_HTTP_OK, "text/plain", "", 0);
    }
    bool tokenize = strcmp(url, "/tokenize") == 0, detokenize = strcmp(url, "/detokenize") == 0;
    if (!completions && !chat && !tokenize && !detokenize)
        return fail(mc, 404, NULL, "no route %s", url);
    if (!post) return fail(mc, 405, NULL, "method %s is not allowed here", method);
    if (c->too_large) return too_large(mc, s);
    if (tokenize) return handle_tokenize(mc, c);
    if (detokenize) return handle_detokenize(mc, c);
    pthread_mutex_lock(&s->lock);
    bool closing = s->closing;
    pthread_mutex_unlock(&s->lock);
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
    conn_free(c);
    *con_cls = NULL;
}

/* ---- start and stop ------------------------------------------------------ */

/* Connections at once: each holds a socket (and a thread), so as many as
 * the open-file limit allows beside RESERVED_FDS, for thousands of idle or
 * slow clients not to crowd out the others (cmd_serve.c raises the limit
 * as far as it may go, as vLLM does). */
static unsigned connection_limit(void) {
    struct rlimit fds;
    rlim_t n = getrlimit(RLIMIT_NOFILE, &fds) == 0 ? fds.rlim_cur : 1024;
    if (n > 65536 || n == RLIM_INFINITY) n = 65536;
    return n > 2 * RESERVED_FDS ? (unsigned)(n - RESERVED_FDS) : RESERVED_FDS;
}

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
    s->api_key = opt->api_key && opt->api_key[0] ? folo_strdup(opt->api_key) : NULL;
    s->reasoning_parser = opt->reasoning_parser;
    folo_metrics_init(&s->metrics);
    pthread_mutex_init(&s->metrics_lock, NULL);
    s->gpu = folo_gpu_stats_open();
    if (folo_gpu_stats_count(s->gpu) > 0)
        folo_log(FOLO_LOG_INFO, "serve: /metrics reports %d GPU(s) through NVML",
                 folo_gpu_stats_count(s->gpu));
    else
        folo_log(FOLO_LOG_INFO, "serve: /metrics has no GPU gauges: %s",
                 folo_gpu_stats_unavailable_reason(s->gpu));
    folo_engine_set_step_hook(engine, on_step, s);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    s->nonce = (unsigned)(now.tv_nsec ^ (now.tv_sec << 16) ^ (unsigned)getpid());
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->drained, NULL);
    if (folo_engine_start(engine, on_output, s, err) != 0) {
        folo_server_stop(s);
        return NULL;
    }
    /* poll(), not select(): sockets numbered past FD_SETSIZE (1024) too. */
    unsigned max_connections = connection_limit();
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
            MHD_USE_ITC,
        0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
        max_connections, MHD_OPTION_END);
    if (!s->daemon) {
        folo_fail(err, "cannot listen on %s:%d (%s)", host, port, strerror(errno));
        folo_server_stop(s);
        return NULL;
    }
    folo_log(FOLO_LOG_INFO, "serve: up to %u connections at once (the open-file limit)",
             max_connections);
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
                abort_entry(s, e);
                e->aborted = true;
            }
        if (pthread_cond_timedwait(&s->drained, &s->lock, &deadline) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&s->lock);
    folo_engine_stop(s->engine);
    folo_engine_set_step_hook(s->engine, NULL, NULL);
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    for (entry *e = s->entries; e; e = e->next) pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&s->lock);
    if (s->daemon) MHD_stop_daemon(s->daemon);
    while (s->entries) {
        entry *e = s->entries;
        s->entries = e->next;
        free_entry(e);
    }
    pthread_cond_destroy(&s->drained);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->metrics_lock);
    folo_gpu_stats_close(s->gpu);
    free(s->api_key);
    free(s->model_name);
    free(s);
}
