/* folo run: one prompt, streamed to the terminal.
 *
 * The prompt (raw text, or with --chat a user message rendered in the
 * model's chat format) is tokenized and handed to the engine, built with
 * one sequence's worth of KV blocks, which prefills it (in chunks of
 * FOLO_DEFAULT_MAX_BATCHED_TOKENS) and decodes token by token: sample,
 * detokenize incrementally, hold back text that could begin a stop string;
 * each step's text is printed as it comes. Generation ends at an eos id of
 * generation_config.json (unless --ignore-eos), a stop string, -n tokens or
 * the model's context. A timing summary goes to stderr with the metrics of
 * DESIGN §7: TTFT counts from the request's arrival (before tokenization)
 * to the first sampled token; TPOT = (last - first token) / (n - 1). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/device.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/log.h"
#include "core/timer.h"
#include "engine/engine.h"
#include "model/model.h"
#include "sample/sampler.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

#define MAX_STOPS 16
#define HELP_SHOWN 1 /* parse_args: --help printed, exit 0 */

static const char k_usage[] =
    "usage: folo run [-m DIR] [--chat] [--system TEXT] [--no-thinking] [-n N]\n"
    "                [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
    "                [--repetition-penalty R] [--presence-penalty P] [--frequency-penalty F]\n"
    "                [--seed S] [--stop STR]... [--ignore-eos] [--threads N] [--device D]\n"
    "                [-f FILE | PROMPT]\n";

static const char k_help[] =
    "Generates a continuation of PROMPT (or the text of FILE) and streams it to stdout;\n"
    "prompt tokens, TTFT, TPOT and tokens/s go to stderr.\n\n"
    "  -m, --model DIR           Hugging Face Qwen3 checkpoint directory\n"
    "                            (default: a synthetic Qwen3-0.6B-shaped model, made on first use)\n"
    "      --chat                format PROMPT as a user message in the model's chat format\n"
    "      --system TEXT         with --chat: a system message first\n"
    "      --no-thinking         with --chat: open the answer with an empty <think> block\n"
    "  -n, --max-tokens N        tokens to generate at most (default 128)\n"
    "      --temperature T       0 = greedy (default: generation_config.json, else 1)\n"
    "      --top-p P             nucleus sampling (default: generation_config.json, else 1)\n"
    "      --top-k K             keep the K most likely tokens; 0 = off (default: generation_config.json)\n"
    "      --min-p P             drop tokens below P x the top probability (default 0)\n"
    "      --repetition-penalty R  penalize tokens of prompt and output (default: generation_config.json, else 1)\n"
    "      --presence-penalty P  penalize tokens already generated (default 0)\n"
    "      --frequency-penalty F penalize by how often a token was generated (default 0)\n"
    "      --seed S              seed the sampler (same seed, same output)\n"
    "      --stop STR            stop before STR (repeatable, up to 16)\n"
    "      --ignore-eos          keep generating past the end-of-sequence tokens\n"
    "      --threads N           CPU threads (default: all cores)\n"
    "      --device D            cpu, cuda, or auto: cuda when built and a GPU is present (default)\n"
    "  -f, --file FILE           read the prompt from FILE\n";

typedef struct run_options {
    const char *model;
    const char *prompt;
    const char *prompt_file;
    const char *system;
    const char *device; /* "cpu", "cuda" or "auto" */
    bool chat, no_thinking, ignore_eos;
    int max_tokens;
    int n_threads;
    const char *stops[MAX_STOPS];
    int n_stops;
    /* sampling flags given on the command line override generation_config */
    bool has_temperature, has_top_p, has_top_k, has_min_p, has_repetition;
    folo_sampling_params sampling;
} run_options;

enum {
    OPT_CHAT = 256, OPT_SYSTEM, OPT_NO_THINKING, OPT_TEMPERATURE, OPT_TOP_P, OPT_TOP_K, OPT_MIN_P,
    OPT_REPETITION, OPT_PRESENCE, OPT_FREQUENCY, OPT_SEED, OPT_STOP, OPT_IGNORE_EOS,
    OPT_THREADS, OPT_DEVICE, OPT_HELP
};

static int parse_args(int argc, char **argv, run_options *o) {
    static const struct option longs[] = {
        {"model", required_argument, NULL, 'm'},
        {"chat", no_argument, NULL, OPT_CHAT},
        {"system", required_argument, NULL, OPT_SYSTEM},
        {"no-thinking", no_argument, NULL, OPT_NO_THINKING},
        {"max-tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, OPT_TEMPERATURE},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"min-p", required_argument, NULL, OPT_MIN_P},
        {"repetition-penalty", required_argument, NULL, OPT_REPETITION},
        {"presence-penalty", required_argument, NULL, OPT_PRESENCE},
        {"frequency-penalty", required_argument, NULL, OPT_FREQUENCY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"stop", required_argument, NULL, OPT_STOP},
        {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"file", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    folo_sampling_params *sp = &o->sampling;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:n:f:", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'f': o->prompt_file = optarg; break;
        case 'n':
            if (cli_parse_int("run", "-n", optarg, 1, 1 << 24, &o->max_tokens)) return 2;
            break;
        case OPT_CHAT: o->chat = true; break;
        case OPT_SYSTEM: o->system = optarg; break;
        case OPT_NO_THINKING: o->no_thinking = true; break;
        case OPT_TEMPERATURE:
            if (cli_parse_float("run", "--temperature", optarg, 0, 100, &sp->temperature)) return 2;
            o->has_temperature = true;
            break;
        case OPT_TOP_P:
            if (cli_parse_float("run", "--top-p", optarg, 1e-6, 1, &sp->top_p)) return 2;
            o->has_top_p = true;
            break;
        case OPT_TOP_K:
            if (cli_parse_int("run", "--top-k", optarg, -1, 1 << 24, &sp->top_k)) return 2;
            o->has_top_k = true;
            break;
        case OPT_MIN_P:
            if (cli_parse_float("run", "--min-p", optarg, 0, 1, &sp->min_p)) return 2;
            o->has_min_p = true;
            break;
        case OPT_REPETITION:
            if (cli_parse_float("run", "--repetition-penalty", optarg, 1e-3, 100,
                                &sp->repetition_penalty))
                return 2;
            o->has_repetition = true;
            break;
        case OPT_PRESENCE:
            if (cli_parse_float("run", "--presence-penalty", optarg, -2, 2, &sp->presence_penalty))
                return 2;
            break;
        case OPT_FREQUENCY:
            if (cli_parse_float("run", "--frequency-penalty", optarg, -2, 2, &sp->frequency_penalty))
                return 2;
            break;
        case OPT_SEED:
            if (cli_parse_u64("run", "--seed", optarg, &sp->seed)) return 2;
            sp->has_seed = true;
            break;
        case OPT_STOP:
            if (o->n_stops == MAX_STOPS)
                return cli_usage_error("run", k_usage, "at most %d --stop strings", MAX_STOPS);
            o->stops[o->n_stops++] = optarg;
            break;
        case OPT_IGNORE_EOS: o->ignore_eos = true; break;
        case OPT_THREADS:
            if (cli_parse_int("run", "--threads", optarg, 1, 1024, &o->n_threads)) return 2;
            break;
        case OPT_DEVICE:
            if (cli_parse_device("run", optarg, &o->device)) return 2;
            break;
        case OPT_HELP:
            printf("%s\n%s", k_usage, k_help);
            return HELP_SHOWN;
        case '?':
            if (optopt) return cli_usage_error("run", k_usage, "option -%c is unknown or needs a value", optopt);
            return cli_usage_error("run", k_usage, "unknown option '%s' (or missing value)", argv[optind - 1]);
        default: return 2;
        }
    }
    int n_positional = argc - optind;
    if (o->prompt_file && n_positional > 0)
        return cli_usage_error("run", k_usage, "give either -f FILE or PROMPT, not both");
    if (!o->prompt_file && n_positional != 1)
        return cli_usage_error("run", k_usage, n_positional == 0 ? "no prompt given%s"
                                                               : "expected one PROMPT argument%s (quote it)",
                               "");
    if (!o->prompt_file) o->prompt = argv[optind];
    if ((o->system || o->no_thinking) && !o->chat)
        return cli_usage_error("run", k_usage, "--system and --no-thinking need --chat");
    return 0;
}

/* The request's parameters: the model's generation_config.json defaults
 * (folo_engine_default_params, as vLLM and transformers apply them), then
 * every flag that was given. */
static folo_request_params request_params(const run_options *o, const folo_engine *e) {
    folo_request_params p = folo_engine_default_params(e);
    folo_sampling_params *sp = &p.sampling;
    const folo_sampling_params *flags = &o->sampling;
    if (o->has_temperature) sp->temperature = flags->temperature;
    if (o->has_top_p) sp->top_p = flags->top_p;
    if (o->has_top_k) sp->top_k = flags->top_k;
    if (o->has_min_p) sp->min_p = flags->min_p;
    if (o->has_repetition) sp->repetition_penalty = flags->repetition_penalty;
    sp->presence_penalty = flags->presence_penalty;
    sp->frequency_penalty = flags->frequency_penalty;
    sp->seed = flags->seed;
    sp->has_seed = flags->has_seed;
    p.max_tokens = o->max_tokens;
    p.stop = o->stops;
    p.n_stop = o->n_stops;
    p.ignore_eos = o->ignore_eos;
    return p;
}

static int build_prompt(const run_options *o, const folo_tokenizer *tok, int32_t **ids, int *n_ids,
                        folo_error *err) {
    char *file_text = NULL;
    const char *text = o->prompt;
    if (o->prompt_file) {
        file_text = folo_file_read(o->prompt_file, NULL, err);
        if (!file_text) return -1;
        text = file_text;
    }
    folo_buf rendered = {0};
    if (o->chat) {
        folo_chat_message msgs[2];
        int n = 0;
        if (o->system) msgs[n++] = (folo_chat_message){.role = "system", .content = o->system};
        msgs[n++] = (folo_chat_message){.role = "user", .content = text};
        folo_chat_options opt = {.add_generation_prompt = true, .enable_thinking = !o->no_thinking};
        if (folo_chat_render(msgs, n, &opt, &rendered, err) != 0) {
            free(file_text);
            folo_buf_free(&rendered);
            return -1;
        }
        text = folo_buf_str(&rendered);
    }
    int rc = folo_tokenizer_encode(tok, text, strlen(text), ids, n_ids, err);
    free(file_text);
    folo_buf_free(&rendered);
    if (rc == 0 && *n_ids == 0) {
        free(*ids);
        *ids = NULL;
        return folo_fail(err, "the prompt is empty");
    }
    return rc;
}

typedef struct run_state {
    folo_model *model;
    folo_tokenizer *tok;
    folo_engine *engine;
    int32_t *prompt_ids;
} run_state;

static void run_state_free(run_state *s) {
    folo_engine_destroy(s->engine);
    folo_tokenizer_free(s->tok);
    folo_model_free(s->model);
    free(s->prompt_ids);
}

/* An engine with one sequence's worth of KV blocks and one seat. */
static int make_engine(const run_options *o, run_state *s, int capacity, folo_error *err) {
    folo_backend_options bo = {.n_threads = o->n_threads,
                               .kv_block_size = FOLO_DEFAULT_BLOCK_SIZE,
                               .max_batch_tokens = FOLO_DEFAULT_MAX_BATCHED_TOKENS};
    bo.kv_n_blocks = (capacity + bo.kv_block_size - 1) / bo.kv_block_size;
    folo_backend *backend = folo_backend_create(o->device, s->model, &bo, err);
    if (!backend) return -1;
    folo_engine_options eo = {.n_threads = o->n_threads, .max_num_seqs = 1};
    s->engine = folo_engine_create_from(s->model, s->tok, backend, &eo, err);
    return s->engine ? 0 : -1;
}

static int generate(run_options *o, run_state *s, folo_error *err) {
    double t_start = folo_now_s();
    folo_log_level level = folo_log_get_level();
    s->model = folo_model_load(o->model, err);
    if (!s->model) return -1;
    s->tok = folo_tokenizer_load(o->model, err);
    if (!s->tok) return -1;
    double t_loaded = folo_now_s();

    /* The request arrives now: TTFT counts tokenization and prefill. */
    double t_arrival = folo_now_s();
    int n_prompt = 0;
    if (build_prompt(o, s->tok, &s->prompt_ids, &n_prompt, err) != 0) return -1;
    int context = s->model->config.max_position_embeddings;
    if (n_prompt >= context)
        return folo_fail(err, "the prompt has %d tokens; the model's context is %d", n_prompt, context);
    if (n_prompt + o->max_tokens > context) o->max_tokens = context - n_prompt;
    /* The engine's start-up line is noise for a single prompt. */
    if (level == FOLO_LOG_INFO) folo_log_set_level(FOLO_LOG_WARN);
    int rc = make_engine(o, s, n_prompt + o->max_tokens, err);
    folo_log_set_level(level);
    if (rc != 0) return -1;
    folo_request_params params = request_params(o, s->engine);
    if (folo_engine_add_tokens(s->engine, s->prompt_ids, n_prompt, &params, NULL, err) != 0)
        return -1;

    folo_request_metrics m = {0};
    folo_finish_reason finish = FOLO_FINISH_NONE;
    while (finish == FOLO_FINISH_NONE) {
        const folo_output *outs;
        int n_outs;
        if (folo_engine_step(s->engine, &outs, &n_outs, err) != 0) return -1;
        for (int i = 0; i < n_outs; i++) {
            fwrite(outs[i].text, 1, outs[i].text_len, stdout);
            fflush(stdout);
            finish = outs[i].finish_reason;
            if (finish == FOLO_FINISH_ERROR) return folo_fail(err, "%s", outs[i].error_message);
            if (finish != FOLO_FINISH_NONE) m = *outs[i].metrics;
        }
    }
    printf("\n");

    double ttft_ms = (m.first_token_s - t_arrival) * 1e3;
    fprintf(stderr,
            "\nfolo run: load %.2f s | prompt %d tokens | output %d tokens (%s)\n"
            "folo run: TTFT %.1f ms (prefill %.1f tokens/s) | TPOT %.2f ms | decode %.2f tokens/s | "
            "E2E %.2f s\n",
            t_loaded - t_start, n_prompt, m.n_output_tokens, folo_finish_reason_name(finish),
            ttft_ms, n_prompt / (ttft_ms * 1e-3), m.tpot_ms, m.tpot_ms > 0 ? 1e3 / m.tpot_ms : 0,
            m.finish_s - t_arrival);
    return 0;
}

int folo_cmd_run(int argc, char **argv) {
    run_options o = {.max_tokens = 128, .device = "auto", .sampling = folo_sampling_default()};
    o.sampling.temperature = 1.0f;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc == HELP_SHOWN ? 0 : rc;
    char *dir = cli_model_dir("run", o.model);
    if (!dir) return 1;
    o.model = dir;
    run_state s = {0};
    folo_error err = {{0}};
    rc = generate(&o, &s, &err);
    if (rc != 0) fprintf(stderr, "folo run: %s\n", err.message);
    run_state_free(&s);
    free(dir);
    return rc == 0 ? 0 : 1;
}
