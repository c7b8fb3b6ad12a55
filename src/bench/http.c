/* The HTTP client of `folo bench serve` (see http.h). */
#include "bench/http.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/timer.h"

/* Longest wait of one poll, ms: bounds how late a finished transfer or a
 * due send is noticed when no socket wakes the loop. */
#define POLL_MS 50

/* One request in flight. */
typedef struct transfer {
    CURL *easy;
    int index;               /* into prompts and records */
    char *body;              /* the JSON request, owned */
    folo_buf in;             /* received bytes not yet split into events ('\r' dropped) */
    double *times;           /* [n_times] s, chunk arrivals */
    int n_times, cap_times;
    int completion_tokens;   /* from the usage chunk; -1 before it */
    int prompt_tokens;       /* from the usage chunk; 0 before it */
    bool done;               /* "data: [DONE]" seen */
    double done_s;           /* s, its arrival */
    char error[128];         /* a bad event or an error object in the stream */
} transfer;

/* Handles one SSE event's data field. */
static void on_data(transfer *t, const char *data, double now) {
    if (strcmp(data, "[DONE]") == 0) {
        t->done = true;
        t->done_s = now;
        return;
    }
    json_t *doc = json_loads(data, 0, NULL);
    if (!json_is_object(doc)) {
        if (!t->error[0]) snprintf(t->error, sizeof t->error, "malformed SSE data");
        json_decref(doc);
        return;
    }
    json_t *choices = json_object_get(doc, "choices");
    if (json_array_size(choices) > 0) {
        if (t->n_times == t->cap_times) {
            t->cap_times = t->cap_times ? 2 * t->cap_times : 64;
            t->times = folo_realloc(t->times, (size_t)t->cap_times * sizeof *t->times);
        }
        t->times[t->n_times++] = now;
    }
    json_t *usage = json_object_get(doc, "usage");
    json_t *tokens = json_object_get(usage, "completion_tokens");
    if (json_is_integer(tokens)) t->completion_tokens = (int)json_integer_value(tokens);
    tokens = json_object_get(usage, "prompt_tokens");
    if (json_is_integer(tokens)) t->prompt_tokens = (int)json_integer_value(tokens);
    json_t *error = json_object_get(doc, "error");
    if (error && !t->error[0]) {
        json_t *message = json_object_get(error, "message");
        snprintf(t->error, sizeof t->error, "stream error: %s",
                 json_is_string(message) ? json_string_value(message) : "(no message)");
    }
    json_decref(doc);
}

/* Splits off and handles every complete event ("...\n\n") of t->in. */
static void parse_events(transfer *t, double now) {
    char *start = t->in.data, *end;
    while ((end = strstr(start, "\n\n")) != NULL) {
        *end = '\0';
        for (char *line = start; line < end;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            if (strncmp(line, "data:", 5) == 0) on_data(t, line + 5 + (line[5] == ' '), now);
            line = nl ? nl + 1 : end;
        }
        start = end + 2;
    }
    size_t rest = t->in.len - (size_t)(start - t->in.data);
    memmove(t->in.data, start, rest + 1);
    t->in.len = rest;
}

static size_t on_bytes(char *ptr, size_t size, size_t n, void *user) {
    transfer *t = user;
    double now = folo_now_s();
    for (size_t i = 0, from = 0; i <= n; i++) {
        if (i == n || ptr[i] == '\r') {
            if (i > from) folo_buf_append(&t->in, ptr + from, i - from);
            from = i + 1;
        }
    }
    if (t->in.len > 0) parse_events(t, now);
    (void)size; /* always 1 for write callbacks */
    return n;
}

static char *request_body(const folo_bench_http_options *o, const folo_bench_prompt *p) {
    json_t *doc = json_pack("{s:s, s:s, s:i, s:b, s:{s:b}}", "model", o->model, "prompt",
                            p->text, "max_tokens", p->output_len, "stream", 1, "stream_options",
                            "include_usage", 1);
    if (o->ignore_eos) json_object_set_new(doc, "ignore_eos", json_true());
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return body;
}

static void start(CURLM *multi, transfer *t, const folo_bench_http_options *o,
                  const folo_bench_prompt *p, struct curl_slist *headers, int index,
                  folo_bench_record *r) {
    memset(t, 0, sizeof *t);
    t->index = index;
    t->completion_tokens = -1;
    t->body = request_body(o, p);
    t->easy = curl_easy_init();
    curl_easy_setopt(t->easy, CURLOPT_URL, o->url);
    curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body);
    curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_bytes);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
    r->n_prompt_tokens = p->prompt_len;
    r->first_scheduled_s = NAN;
    r->arrival_s = folo_now_s();
    curl_multi_add_handle(multi, t->easy);
}

/* Fills t's record from the finished transfer and frees t's resources. */
static void finish(CURLM *multi, transfer *t, CURLcode result, folo_bench_record *r) {
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (result != CURLE_OK)
        snprintf(r->error, sizeof r->error, "%s", curl_easy_strerror(result));
    else if (status != 200)
        snprintf(r->error, sizeof r->error, "HTTP %ld: %.90s", status,
                 t->in.len ? t->in.data : "(no body)");
    else if (t->error[0])
        snprintf(r->error, sizeof r->error, "%s", t->error);
    else if (!t->done || t->n_times == 0)
        snprintf(r->error, sizeof r->error, "stream ended without %s",
                 t->done ? "any token" : "data: [DONE]");
    r->ok = r->error[0] == '\0';
    if (r->ok) {
        folo_bench_record_set_times(r, t->times, t->n_times);
        if (t->completion_tokens >= 0) r->n_output_tokens = t->completion_tokens;
        r->n_usage_prompt_tokens = t->prompt_tokens;
        r->first_token_s = t->times[0];
        r->finish_s = t->done_s;
    } else {
        r->first_token_s = r->finish_s = folo_now_s();
    }
    curl_multi_remove_handle(multi, t->easy);
    curl_easy_cleanup(t->easy);
    free(t->body);
    free(t->times);
    folo_buf_free(&t->in);
}

static struct curl_slist *request_headers(void) {
    /* "Expect:" stops libcurl from waiting for a 100 Continue before
     * sending bodies over 1 KiB, which would add to every long prompt's
     * TTFT. */
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    const char *key = getenv("OPENAI_API_KEY");
    if (key && key[0]) {
        folo_buf auth = {0};
        folo_buf_printf(&auth, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, folo_buf_str(&auth));
        folo_buf_free(&auth);
    }
    return h;
}

int folo_bench_http_run(const folo_bench_http_options *o, const folo_bench_prompt *prompts,
                        const double *send_at_s, int n, folo_bench_record *records,
                        double *duration_s, folo_progress *bar, folo_error *err) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return folo_fail(err, "libcurl failed to initialize");
    CURLM *multi = curl_multi_init();
    int max_active = o->max_concurrency > 0 ? o->max_concurrency : n;
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)max_active);
    struct curl_slist *headers = request_headers();
    transfer *transfers = folo_calloc((size_t)n, sizeof *transfers);
    int next = 0, active = 0, n_done = 0;
    double t0 = folo_now_s(), last_end = t0;
    while (n_done < n) {
        double now = folo_now_s() - t0;
        while (next < n && send_at_s[next] <= now && active < max_active) {
            start(multi, &transfers[next], o, &prompts[next], headers, next, &records[next]);
            next++, active++;
        }
        int running;
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int n_left;
        while ((msg = curl_multi_info_read(multi, &n_left)) != NULL) {
            if (msg->msg != CURLMSG_DONE) continue;
            char *priv;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            transfer *t = (transfer *)priv;
            folo_bench_record *r = &records[t->index];
            finish(multi, t, msg->data.result, r);
            last_end = fmax(last_end, r->finish_s);
            active--, n_done++;
            if (bar) folo_progress_update(bar, n_done);
        }
        int wait_ms = POLL_MS;
        if (next < n && active < max_active) {
            double due_ms = (send_at_s[next] - (folo_now_s() - t0)) * 1e3;
            wait_ms = due_ms <= 0 ? 0 : due_ms < POLL_MS ? (int)ceil(due_ms) : POLL_MS;
        }
        if (n_done < n) curl_multi_poll(multi, NULL, 0, wait_ms, NULL);
    }
    *duration_s = last_end - t0;
    free(transfers);
    curl_slist_free_all(headers);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    return 0;
}

static size_t collect(char *ptr, size_t size, size_t n, void *user) {
    folo_buf_append(user, ptr, size * n);
    return size * n;
}

char *folo_bench_http_first_model(const char *base_url, folo_error *err) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        folo_fail(err, "libcurl failed to initialize");
        return NULL;
    }
    folo_buf url = {0}, body = {0};
    folo_buf_printf(&url, "%s/v1/models", base_url);
    struct curl_slist *headers = request_headers();
    CURL *easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_URL, folo_buf_str(&url));
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(easy);
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    char *name = NULL;
    if (rc != CURLE_OK) {
        folo_fail(err, "GET %s: %s", folo_buf_str(&url), curl_easy_strerror(rc));
    } else if (status != 200) {
        folo_fail(err, "GET %s: HTTP %ld", folo_buf_str(&url), status);
    } else {
        json_t *doc = body.len ? json_loads(body.data, 0, NULL) : NULL;
        json_t *id = json_object_get(json_array_get(json_object_get(doc, "data"), 0), "id");
        if (json_is_string(id))
            name = folo_strdup(json_string_value(id));
        else
            folo_fail(err, "GET %s: the reply lists no model (expected data[0].id)",
                      folo_buf_str(&url));
        json_decref(doc);
    }
    curl_easy_cleanup(easy);
    curl_slist_free_all(headers);
    folo_buf_free(&url);
    folo_buf_free(&body);
    curl_global_cleanup();
    return name;
}
