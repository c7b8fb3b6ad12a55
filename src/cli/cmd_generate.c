/* folo generate: offline batch inference, like vLLM's LLM.generate.
 *
 * Every line of the input is one request, a JSON object with one of
 * "prompt" (text, no chat format), "messages" (an OpenAI-style
 * conversation, rendered with the chat format; "tools", "enable_thinking"
 * and "chat_template_kwargs" as `folo template` reads them) or
 * "prompt_token_ids", plus optional sampling fields (SAMPLING_FIELDS
 * below) and an "id" echoed back. All lines are read and validated first
 * (a bad line is an error naming its number, and nothing runs), then added
 * to one engine at once and generated together; the output has one line
 * per input line, in input order, with the text, token ids, finish reason
 * and the per-request metrics of DESIGN §7. A progress bar and the run's
 * summary go to stderr. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/log.h"
#include "core/timer.h"
#include "folo.h"

#define HELP_SHOWN 1
#define MAX_STOPS 16
#define MAX_STOP_IDS 16

static const char k_cmd[] = "generate";
static const char k_usage[] =
    "usage: folo generate [-m DIR] --input FILE --output FILE [--max-tokens N]\n"
    "                     [--max-batched-tokens N] [--max-seqs N] [--kv-memory BYTES]\n"
    "                     [--block-size N] [--no-prefix-cache] [--threads N] [--device D]\n";
static const char k_help[] =
    "Generates completions for every line of a JSONL file, all scheduled together.\n\n"
    "Input lines: {\"prompt\": TEXT} | {\"messages\": [...]} | {\"prompt_token_ids\": [...]},\n"
    "with optional max_tokens, temperature, top_p, top_k, min_p, repetition_penalty,\n"
    "presence_penalty, frequency_penalty, seed, stop (string or list), stop_token_ids, n,\n"
    "ignore_eos, skip_special_tokens, logprobs (0-20 top tokens), id. Unset sampling\n"
    "fields take the model's generation_config.json defaults.\n"
    "Output lines (input order): index, id, prompt_tokens, cached_tokens, text, token_ids,\n"
    "output_tokens, finish_reason, ttft_ms, tpot_ms, e2e_ms, logprobs when asked (all of\n"
    "sample 0), and with n > 1 \"samples\": the same fields for every sample.\n\n"
    "  -m, --model DIR            Hugging Face Qwen3 checkpoint directory\n"
    "                             (default: a synthetic Qwen3-0.6B-shaped model, made on first "
    "use)\n"
    "  -i, --input FILE           JSONL requests ('-' reads stdin)\n"
    "  -o, --output FILE          JSONL completions\n"
    "      --max-tokens N         max_tokens of lines that give none (default 128)\n"
    CLI_ENGINE_HELP;

typedef struct generate_options {
    const char *model;
    const char *input;
    const char *output;
    int max_tokens;
    folo_engine_options engine;
} generate_options;

enum {
    OPT_MAX_TOKENS = 256, OPT_HELP
};

static int parse_args(int argc, char **argv, generate_options *o) {
    static const struct option longs[] = {
        {"model", required_argument, NULL, 'm'},
        {"input", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'},
        {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
        CLI_ENGINE_LONG_OPTIONS,
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    folo_engine_options *e = &o->engine;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:i:o:", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'i': o->input = optarg; break;
        case 'o': o->output = optarg; break;
        case OPT_MAX_TOKENS:
            if (cli_parse_int(k_cmd, "--max-tokens", optarg, 1, 1 << 24, &o->max_tokens)) return 2;
            break;
        case OPT_HELP:
            printf("%s\n%s", k_usage, k_help);
            return HELP_SHOWN;
        default:
            if (cli_engine_flag(k_cmd, k_usage, c, argv, e) != 0) return 2;
            break;
        }
    }
    if (optind != argc)
        return cli_usage_error(k_cmd, k_usage, "unexpected argument '%s'", argv[optind]);
    if (!o->input || !o->output)
        return cli_usage_error(k_cmd, k_usage, "--input and --output are required");
    return 0;
}

/* ---- reading the input --------------------------------------------------- */

/* One input line, parsed; its strings point into `root`. */
typedef struct request_line {
    json_t *root;
    const char *raw;               /* the line's text (for "messages") */
    folo_request_params params;
    const char *stops[MAX_STOPS];
    int32_t stop_ids[MAX_STOP_IDS];
    int32_t *prompt_ids;           /* "prompt_token_ids", owned */
    int n_prompt_ids;
} request_line;

static const char *const k_fields[] = {
    "prompt", "messages", "prompt_token_ids", "tools", "enable_thinking", "chat_template_kwargs",
    "add_generation_prompt", "id", "max_tokens", "temperature", "top_p", "top_k", "min_p",
    "repetition_penalty", "presence_penalty", "frequency_penalty", "seed", "stop",
    "stop_token_ids", "n", "ignore_eos", "skip_special_tokens", "logprobs", NULL,
};

static int get_int(json_t *root, const char *key, long lo, long hi, int *out, folo_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return folo_fail(err, "%s must be an integer in [%ld, %ld]", key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *root, const char *key, float *out, folo_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return folo_fail(err, "%s must be a number", key);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(json_t *root, const char *key, bool *out, folo_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return folo_fail(err, "%s must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* An array of token ids into ids (at most cap, or any number when ids is
 * NULL and *owned receives a new array). */
static int get_ids(json_t *v, const char *key, int32_t *ids, int cap, int32_t **owned, int *n,
                   folo_error *err) {
    if (!json_is_array(v)) return folo_fail(err, "%s must be an array of token ids", key);
    size_t count = json_array_size(v);
    if (ids && count > (size_t)cap) return folo_fail(err, "%s: at most %d ids", key, cap);
    if (!ids) ids = *owned = folo_calloc(count + 1, sizeof(int32_t));
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_integer(item) || json_integer_value(item) < 0 ||
            json_integer_value(item) > INT32_MAX)
            return folo_fail(err, "%s[%zu] must be a non-negative integer", key, i);
        ids[i] = (int32_t)json_integer_value(item);
    }
    *n = (int)count;
    return 0;
}

static int parse_stop(json_t *root, request_line *r, folo_error *err) {
    json_t *v = json_object_get(root, "stop");
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        r->stops[0] = json_string_value(v);
        r->params.n_stop = 1;
    } else if (json_is_array(v)) {
        if (json_array_size(v) > MAX_STOPS)
            return folo_fail(err, "stop: at most %d strings", MAX_STOPS);
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            if (!json_is_string(item)) return folo_fail(err, "stop[%zu] must be a string", i);
            r->stops[i] = json_string_value(item);
        }
        r->params.n_stop = (int)json_array_size(v);
    } else {
        return folo_fail(err, "stop must be a string or an array of strings");
    }
    r->params.stop = r->stops;
    return 0;
}

/* Parses one line into r (params start from the defaults). */
static int parse_line(const char *text, const folo_request_params *defaults, request_line *r,
                      folo_error *err) {
    json_error_t jerr;
    r->raw = text;
    r->params = *defaults;
    r->root = json_loads(text, 0, &jerr);
    if (!r->root) return folo_fail(err, "invalid JSON: %s (column %d)", jerr.text, jerr.column);
    json_t *root = r->root;
    if (!json_is_object(root)) return folo_fail(err, "must be a JSON object");
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        int known = 0;
        for (int i = 0; k_fields[i]; i++) known |= strcmp(key, k_fields[i]) == 0;
        if (!known) return folo_fail(err, "unknown field '%s'", key);
    }
    json_t *prompt = json_object_get(root, "prompt"), *messages = json_object_get(root, "messages");
    json_t *ids = json_object_get(root, "prompt_token_ids");
    if (!!prompt + !!messages + !!ids != 1)
        return folo_fail(err,
                         "needs exactly one of \"prompt\", \"messages\", \"prompt_token_ids\"");
    if (prompt && !json_is_string(prompt)) return folo_fail(err, "prompt must be a string");
    if (ids && get_ids(ids, "prompt_token_ids", NULL, 0, &r->prompt_ids, &r->n_prompt_ids, err))
        return -1;
    folo_request_params *p = &r->params;
    folo_sampling_params *sp = &p->sampling;
    bool skip_special = !p->include_special;
    int seed = -1;
    if (get_int(root, "max_tokens", 1, 1 << 24, &p->max_tokens, err) ||
        get_int(root, "n", 1, 1 << 10, &p->n, err) ||
        get_int(root, "top_k", -1, 1 << 24, &sp->top_k, err) ||
        get_int(root, "seed", 0, INT32_MAX, &seed, err) ||
        get_int(root, "logprobs", 0, FOLO_MAX_TOP_LOGPROBS, &sp->logprobs, err) ||
        get_float(root, "temperature", &sp->temperature, err) ||
        get_float(root, "top_p", &sp->top_p, err) || get_float(root, "min_p", &sp->min_p, err) ||
        get_float(root, "repetition_penalty", &sp->repetition_penalty, err) ||
        get_float(root, "presence_penalty", &sp->presence_penalty, err) ||
        get_float(root, "frequency_penalty", &sp->frequency_penalty, err) ||
        get_bool(root, "ignore_eos", &p->ignore_eos, err) ||
        get_bool(root, "skip_special_tokens", &skip_special, err) || parse_stop(root, r, err))
        return -1;
    p->include_special = !skip_special;
    if (seed >= 0) {
        sp->seed = (uint64_t)seed;
        sp->has_seed = true;
    }
    json_t *stop_ids = json_object_get(root, "stop_token_ids");
    if (stop_ids && !json_is_null(stop_ids)) {
        if (get_ids(stop_ids, "stop_token_ids", r->stop_ids, MAX_STOP_IDS, NULL,
                    &p->n_stop_token_ids, err))
            return -1;
        p->stop_token_ids = r->stop_ids;
    }
    return folo_sampling_validate(sp, err);
}

static int add_line(folo_engine *e, request_line *r, uint64_t *id, folo_error *err) {
    json_t *prompt = json_object_get(r->root, "prompt");
    if (prompt) return folo_engine_add_text(e, json_string_value(prompt), &r->params, id, err);
    if (r->prompt_ids)
        return folo_engine_add_tokens(e, r->prompt_ids, r->n_prompt_ids, &r->params, id, err);
    return folo_engine_add_chat(e, r->raw, &r->params, id, err);
}

/* ---- collecting and writing results -------------------------------------- */

typedef struct sample_result {
    folo_buf text;
    int32_t *tokens;     /* [n_tokens] */
    int n_tokens, cap_tokens;
    folo_finish_reason finish;
    folo_request_metrics metrics; /* token_times_s not kept */
    json_t *logprobs;    /* [{"token", "logprob", "top": [[id, logprob], ...]}] when asked */
    const char *error;   /* points into a copy owned by the run */
} sample_result;

typedef struct request_result {
    json_t *id;          /* the line's "id" (borrowed from its root), or NULL */
    int n;
    int n_finished;
    sample_result *samples; /* [n] */
} request_result;

typedef struct run_state {
    folo_engine *engine;
    request_line *lines;     /* [n_lines] */
    request_result *results; /* [n_lines] */
    int n_lines;
    uint64_t first_id;
    int n_done;
    char **errors;           /* [n_errors] messages of failed requests */
    int n_errors;
} run_state;

static void collect(run_state *s, const folo_output *o) {
    uint64_t index = o->request_id - s->first_id;
    FOLO_ASSERT(index < (uint64_t)s->n_lines);
    request_result *r = &s->results[index];
    sample_result *x = &r->samples[o->sample_index];
    folo_buf_append(&x->text, o->text, o->text_len);
    for (int i = 0; i < o->n_token_ids; i++) {
        if (x->n_tokens == x->cap_tokens) {
            x->cap_tokens = x->cap_tokens ? 2 * x->cap_tokens : 64;
            x->tokens = folo_realloc(x->tokens, (size_t)x->cap_tokens * sizeof(int32_t));
        }
        x->tokens[x->n_tokens++] = o->token_ids[i];
    }
    for (int i = 0; i < o->n_logprobs; i++) {
        const folo_sample_result *lp = &o->logprobs[i];
        json_t *entry = json_pack("{s:i, s:f}", "token", (json_int_t)lp->token, "logprob",
                                  (double)lp->logprob);
        if (lp->n_top > 0) {
            json_t *top = json_array();
            for (int k = 0; k < lp->n_top; k++)
                json_array_append_new(top, json_pack("[i, f]", (json_int_t)lp->top[k].token,
                                                     (double)lp->top[k].logprob));
            json_object_set_new(entry, "top", top);
        }
        if (!x->logprobs) x->logprobs = json_array();
        json_array_append_new(x->logprobs, entry);
    }
    if (o->finish_reason == FOLO_FINISH_NONE) return;
    x->finish = o->finish_reason;
    x->metrics = *o->metrics;
    x->metrics.token_times_s = NULL;
    if (o->error_message) {
        s->errors = folo_realloc(s->errors, (size_t)(s->n_errors + 1) * sizeof *s->errors);
        x->error = s->errors[s->n_errors++] = folo_strdup(o->error_message);
    }
    if (++r->n_finished == r->n) s->n_done++;
}

static json_t *sample_json(const sample_result *x, bool with_prompt) {
    json_t *o = json_object();
    if (with_prompt) {
        json_object_set_new(o, "prompt_tokens", json_integer(x->metrics.n_prompt_tokens));
        json_object_set_new(o, "cached_tokens", json_integer(x->metrics.n_cached_tokens));
    }
    json_t *text = json_stringn(folo_buf_str(&x->text), x->text.len);
    json_object_set_new(o, "text", text ? text : json_string(""));
    json_t *ids = json_array();
    for (int i = 0; i < x->n_tokens; i++) json_array_append_new(ids, json_integer(x->tokens[i]));
    json_object_set_new(o, "token_ids", ids);
    json_object_set_new(o, "output_tokens", json_integer(x->n_tokens));
    json_object_set_new(o, "finish_reason", json_string(folo_finish_reason_name(x->finish)));
    if (x->error) json_object_set_new(o, "error", json_string(x->error));
    if (x->logprobs) json_object_set(o, "logprobs", x->logprobs);
    json_object_set_new(o, "ttft_ms", json_real(x->metrics.ttft_ms));
    json_object_set_new(o, "tpot_ms", json_real(x->metrics.tpot_ms));
    json_object_set_new(o, "e2e_ms", json_real(x->metrics.e2e_ms));
    return o;
}

static int write_results(const run_state *s, FILE *out, folo_error *err) {
    for (int i = 0; i < s->n_lines; i++) {
        const request_result *r = &s->results[i];
        json_t *line = json_object();
        json_object_set_new(line, "index", json_integer(i));
        if (r->id) json_object_set(line, "id", r->id);
        json_t *first = sample_json(&r->samples[0], true);
        json_object_update(line, first);
        json_decref(first);
        if (r->n > 1) {
            json_t *samples = json_array();
            for (int k = 0; k < r->n; k++)
                json_array_append_new(samples, sample_json(&r->samples[k], false));
            json_object_set_new(line, "samples", samples);
        }
        char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(line);
        if (!text || fprintf(out, "%s\n", text) < 0) {
            free(text);
            return folo_fail(err, "cannot write the output");
        }
        free(text);
    }
    return 0;
}

static void print_summary(const run_state *s, double wall_s) {
    folo_engine_stats st;
    folo_engine_get_stats(s->engine, &st);
    int64_t prompt_tokens = 0, output_tokens = 0;
    double ttft_sum = 0, tpot_sum = 0;
    int n_samples = 0, n_tpot = 0;
    for (int i = 0; i < s->n_lines; i++) {
        const request_result *r = &s->results[i];
        prompt_tokens += r->samples[0].metrics.n_prompt_tokens;
        for (int k = 0; k < r->n; k++) {
            const sample_result *x = &r->samples[k];
            output_tokens += x->n_tokens;
            ttft_sum += x->metrics.ttft_ms;
            n_samples++;
            if (x->n_tokens > 1) tpot_sum += x->metrics.tpot_ms, n_tpot++;
        }
    }
    double hit_rate = st.prefix_queried_tokens
                          ? 100.0 * (double)st.prefix_hit_tokens / (double)st.prefix_queried_tokens
                          : 0;
    fprintf(stderr,
            "folo generate: %d requests (%d samples) | prompt %lld tokens | output %lld tokens | "
            "wall %.2f s\n"
            "folo generate: output %.1f tokens/s | total %.1f tokens/s | %.2f requests/s | "
            "mean TTFT %.1f ms | mean TPOT %.2f ms\n"
            "folo generate: prefix cache hit rate %.1f%% (%lld of %lld prompt tokens) | peak KV "
            "%d of %d blocks (%.1f%%) | preemptions %lld | steps %lld\n",
            s->n_lines, n_samples, (long long)prompt_tokens, (long long)output_tokens, wall_s,
            (double)output_tokens / wall_s, (double)(prompt_tokens + output_tokens) / wall_s,
            s->n_lines / wall_s, n_samples ? ttft_sum / n_samples : 0,
            n_tpot ? tpot_sum / n_tpot : 0, hit_rate, (long long)st.prefix_hit_tokens,
            (long long)st.prefix_queried_tokens, st.kv_blocks_peak_used, st.kv_blocks_total,
            st.kv_blocks_total ? 100.0 * st.kv_blocks_peak_used / st.kv_blocks_total : 0,
            (long long)st.n_preemptions, (long long)st.n_steps);
}

/* Reads and adds every line; an error names the line. */
static int add_all(run_state *s, char *input, int max_tokens, folo_error *err) {
    folo_request_params defaults = folo_engine_default_params(s->engine);
    defaults.max_tokens = max_tokens;
    int cap = 0, line_no = 0;
    for (char *line = input, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        line_no++;
        if (strspn(line, " \t\r") == strlen(line)) continue;
        if (s->n_lines == cap) {
            cap = cap ? 2 * cap : 64;
            s->lines = folo_realloc(s->lines, (size_t)cap * sizeof *s->lines);
            s->results = folo_realloc(s->results, (size_t)cap * sizeof *s->results);
        }
        request_line *r = &s->lines[s->n_lines];
        request_result *res = &s->results[s->n_lines];
        memset(r, 0, sizeof *r);
        memset(res, 0, sizeof *res);
        s->n_lines++;
        uint64_t id;
        if (parse_line(line, &defaults, r, err) != 0 || add_line(s->engine, r, &id, err) != 0)
            return folo_fail_prefix(err, "line %d", line_no);
        if (s->n_lines == 1) s->first_id = id;
        FOLO_ASSERT(id == s->first_id + (uint64_t)(s->n_lines - 1));
        res->id = json_object_get(r->root, "id");
        res->n = r->params.n > 0 ? r->params.n : 1;
        res->samples = folo_calloc((size_t)res->n, sizeof *res->samples);
    }
    if (s->n_lines == 0) return folo_fail(err, "the input has no requests");
    return 0;
}

static int run(const generate_options *o, run_state *s, folo_error *err) {
    char *input = strcmp(o->input, "-") == 0 ? NULL : folo_file_read(o->input, NULL, err);
    if (strcmp(o->input, "-") == 0) {
        folo_buf b = {0};
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) folo_buf_append(&b, chunk, n);
        input = folo_strdup(folo_buf_str(&b));
        folo_buf_free(&b);
    }
    if (!input) return folo_fail_prefix(err, "--input");
    FILE *out = fopen(o->output, "w");
    if (!out) {
        free(input);
        return folo_fail(err, "--output: cannot open %s for writing", o->output);
    }
    folo_engine_options eo = o->engine;
    eo.model_dir = o->model;
    int rc = -1;
    s->engine = folo_engine_create(&eo, err);
    double t0 = folo_now_s();
    if (s->engine && add_all(s, input, o->max_tokens, err) == 0) {
        folo_progress bar;
        folo_progress_begin(&bar, "generate", s->n_lines);
        rc = 0;
        while (rc == 0 && folo_engine_has_unfinished(s->engine)) {
            const folo_output *outs;
            int n_outs;
            rc = folo_engine_step(s->engine, &outs, &n_outs, err);
            for (int i = 0; i < n_outs; i++) collect(s, &outs[i]);
            folo_progress_update(&bar, s->n_done);
        }
        folo_progress_end(&bar);
        double wall_s = folo_now_s() - t0;
        if (rc == 0) rc = write_results(s, out, err);
        if (rc == 0) print_summary(s, wall_s);
        if (rc == 0 && s->n_errors)
            rc = folo_fail(err, "%d request(s) failed; first: %s", s->n_errors, s->errors[0]);
    }
    if (fclose(out) != 0 && rc == 0) rc = folo_fail(err, "--output: cannot write %s", o->output);
    free(input);
    return rc;
}

static void run_state_free(run_state *s) {
    for (int i = 0; i < s->n_lines; i++) {
        request_result *r = &s->results[i];
        for (int k = 0; k < r->n; k++) {
            folo_buf_free(&r->samples[k].text);
            json_decref(r->samples[k].logprobs);
            free(r->samples[k].tokens);
        }
        free(r->samples);
        json_decref(s->lines[i].root);
        free(s->lines[i].prompt_ids);
    }
    for (int i = 0; i < s->n_errors; i++) free(s->errors[i]);
    free(s->errors);
    free(s->lines);
    free(s->results);
    folo_engine_destroy(s->engine);
}

int folo_cmd_generate(int argc, char **argv) {
    generate_options o = {.max_tokens = 128};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc == HELP_SHOWN ? 0 : rc;
    char *dir = cli_model_dir(k_cmd, o.model);
    if (!dir) return 1;
    o.model = dir;
    run_state s = {0};
    folo_error err = {{0}};
    rc = run(&o, &s, &err);
    if (rc != 0) fprintf(stderr, "folo generate: %s\n", err.message);
    run_state_free(&s);
    free(dir);
    return rc == 0 ? 0 : 1;
}
