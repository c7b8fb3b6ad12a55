/* folo serve: the OpenAI-compatible HTTP server, like `vllm serve`.
 *
 * Loads the model into one engine, starts the server (src/server/) and
 * waits for SIGINT or SIGTERM, which it takes synchronously with sigwait:
 * both signals are blocked before any thread starts, so no thread is ever
 * interrupted and the shutdown runs here, in order (stop accepting, abort
 * the requests in flight, stop the engine), and the process exits 0. */
#include <getopt.h>
#include <libgen.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/log.h"
#include "folo.h"
#include "server/server.h"

#define HELP_SHOWN 1

static const char k_cmd[] = "serve";
static const char k_usage[] =
    "usage: folo serve [-m DIR] [--host HOST] [--port PORT] [--served-model-name NAME]\n"
    "                  [--max-batched-tokens N] [--max-seqs N] [--kv-memory BYTES]\n"
    "                  [--block-size N] [--no-prefix-cache] [--threads N] [--device D]\n"
    "                  [--api-key KEY] [--max-queue N] [--reasoning-parser qwen3]\n"
    "                  [--log-level LEVEL]\n";
static const char k_help[] =
    "Serves the model over an OpenAI-compatible HTTP API: GET /health, GET /metrics\n"
    "(Prometheus), GET /v1/models, POST /v1/completions, POST /v1/chat/completions\n"
    "(with \"stream\": true as SSE), POST /tokenize, POST /detokenize (docs/serve.md).\n"
    "SIGINT or SIGTERM stops it: requests in flight are aborted, the exit code is 0.\n\n"
    "  -m, --model DIR            Hugging Face Qwen3 checkpoint directory\n"
    "                             (default: a synthetic Qwen3-0.6B-shaped model, made on first "
    "use)\n"
    "      --host HOST            address to bind (default 127.0.0.1)\n"
    "      --port PORT            port to listen on (default 8000)\n"
    "      --served-model-name N  the model name of the API (default: the directory's name)\n"
    "      --api-key KEY          the /v1/ routes want `Authorization: Bearer KEY`, else 401\n"
    "                             (default: $FOLO_API_KEY; unset: no key)\n"
    "      --max-queue N          at most N requests wait for the engine: one more is\n"
    "                             answered 503 with Retry-After (N >= 1; default: no limit)\n"
    "      --reasoning-parser qwen3\n"
    "                             chat answers give the thinking between <think> and\n"
    "                             </think> as reasoning_content, the rest as content\n"
    CLI_ENGINE_HELP
    "      --log-level LEVEL      debug, info, warn, error or off (default info)\n";

typedef struct serve_options {
    const char *model;
    folo_server_options server;
    folo_engine_options engine;
} serve_options;

enum {
    OPT_HOST = 256, OPT_PORT, OPT_NAME, OPT_API_KEY, OPT_MAX_QUEUE, OPT_REASONING,
    OPT_LOG_LEVEL, OPT_HELP
};

static int parse_args(int argc, char **argv, serve_options *o) {
    static const struct option longs[] = {
        {"model", required_argument, NULL, 'm'},
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"served-model-name", required_argument, NULL, OPT_NAME},
        {"api-key", required_argument, NULL, OPT_API_KEY},
        {"max-queue", required_argument, NULL, OPT_MAX_QUEUE},
        {"reasoning-parser", required_argument, NULL, OPT_REASONING},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        CLI_ENGINE_LONG_OPTIONS,
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    folo_engine_options *e = &o->engine;
    folo_log_level level;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case OPT_HOST: o->server.host = optarg; break;
        case OPT_PORT:
            if (cli_parse_int(k_cmd, "--port", optarg, 1, 65535, &o->server.port)) return 2;
            break;
        case OPT_NAME: o->server.model_name = optarg; break;
        case OPT_API_KEY: o->server.api_key = optarg; break;
        case OPT_REASONING:
            if (strcmp(optarg, "qwen3") != 0)
                return cli_usage_error(k_cmd, k_usage,
                                       "unknown --reasoning-parser '%s' (known: qwen3)", optarg);
            o->server.reasoning_parser = true;
            break;
        case OPT_MAX_QUEUE:
            /* Every new request waits until a step takes it in: 0 would
             * refuse them all. */
            if (cli_parse_int(k_cmd, "--max-queue", optarg, 1, 1 << 30, &e->max_queue)) return 2;
            break;
        case OPT_LOG_LEVEL:
            if (folo_log_parse_level(optarg, &level) != 0)
                return cli_usage_error(k_cmd, k_usage, "invalid --log-level '%s'", optarg);
            folo_log_set_level(level);
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
    return 0;
}

/* The directory's last component, as vLLM names a model served from a
 * path (trailing slashes ignored). */
static char *default_model_name(const char *dir) {
    char *copy = folo_strdup(dir);
    char *name = folo_strdup(basename(copy));
    free(copy);
    return name;
}

int folo_cmd_serve(int argc, char **argv) {
    /* As vLLM reads VLLM_API_KEY; --api-key wins. */
    serve_options o = {.server = {.api_key = getenv("FOLO_API_KEY")}};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc == HELP_SHOWN ? 0 : rc;
    char *dir = cli_model_dir(k_cmd, o.model);
    if (!dir) return 1;
    char *name = o.server.model_name ? NULL : default_model_name(dir);
    if (name) o.server.model_name = name;

    /* Blocked here, inherited by every thread started below. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* One HTTP thread per connection would give glibc's malloc an arena per
     * busy thread (up to 8 per core), each keeping its freed pages: in a
     * soak of 64 streaming clients RSS crept up run after run with the
     * default (+57, +28, +19, +6, +15 MB per thousand requests) and was flat
     * with 2 or 4 arenas (issue 11 note has the figures). A user's own
     * MALLOC_ARENA_MAX is left in force. */
    if (!getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 4);
    /* Every connection holds a socket: the open-file limit is raised to
     * its hard limit, as vLLM raises it, so that thousands of idle clients
     * leave room for the others (the server takes as many as it allows). */
    struct rlimit fds;
    if (getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
        fds.rlim_cur = fds.rlim_max;
        setrlimit(RLIMIT_NOFILE, &fds);
    }

    folo_error err = {{0}};
    o.engine.model_dir = dir;
    folo_engine *engine = folo_engine_create(&o.engine, &err);
    folo_server *server = engine ? folo_server_start(engine, &o.server, &err) : NULL;
    rc = 0;
    if (!server) {
        fprintf(stderr, "folo serve: %s\n", err.message);
        rc = 1;
    } else {
        fprintf(stderr, "folo serve: model %s served as \"%s\" on http://%s:%d\n", dir,
                o.server.model_name, o.server.host ? o.server.host : "127.0.0.1",
                o.server.port ? o.server.port : 8000);
        int sig = 0;
        sigwait(&signals, &sig);
        fprintf(stderr, "folo serve: %s received, shutting down\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
        folo_server_stop(server);
    }
    folo_engine_destroy(engine);
    free(name);
    free(dir);
    return rc;
}
