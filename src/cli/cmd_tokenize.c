/* folo tokenize: prints the token ids of a text as one JSON array (the
 * inspection tool llama-tokenize is for llama.cpp). Loads only the
 * tokenizer (default: the Qwen3 tokenizer shipped in the repository), never
 * a model. --jsonl encodes many texts in one process (the differential
 * tests use it); --stats times the encoding alone, for bench/tokenizer.py;
 * --decode goes the other way (ids -> text), to test the decoder. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/timer.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

static const char k_cmd[] = "tokenize";
static const char k_usage[] =
    "usage: folo tokenize [-m DIR] [--file F | --jsonl F] [--stats] [--decode [--skip-special]]\n"
    "                     [TEXT]\n";
static const char k_help[] =
    "Prints the token ids of TEXT as one JSON array (special tokens written in the\n"
    "text are recognized; no BOS is added).\n\n"
    "  -m, --model DIR  use DIR/tokenizer.json (default: the repository's Qwen3 tokenizer)\n"
    "  --file F         encode the whole of file F instead of TEXT ('-' reads stdin)\n"
    "  --jsonl F        every line of F is a JSON string; prints one array per line\n"
    "  --stats          print the token count, encode seconds (load excluded) and\n"
    "                   tokens/s to stderr\n"
    "  --decode         the input is a JSON array of ids (per line with --jsonl);\n"
    "                   prints the decoded text as a JSON string\n"
    "  --skip-special   with --decode: drop tokens marked special\n"
    "  -h, --help       show this help\n";

typedef struct tokenize_opts {
    const char *model_dir; /* NULL: cli_tokenizer_dir() */
    const char *file;
    const char *jsonl;
    const char *text;
    bool stats, decode, skip_special;
} tokenize_opts;

enum { OPT_FILE = 256, OPT_JSONL, OPT_STATS, OPT_DECODE, OPT_SKIP_SPECIAL };

/* 0: parsed, 1: help printed, 2: usage error (printed). */
static int parse_args(int argc, char **argv, tokenize_opts *o) {
    static const struct option k_options[] = {
        {"model", required_argument, NULL, 'm'},     {"file", required_argument, NULL, OPT_FILE},
        {"jsonl", required_argument, NULL, OPT_JSONL}, {"stats", no_argument, NULL, OPT_STATS},
        {"decode", no_argument, NULL, OPT_DECODE},
        {"skip-special", no_argument, NULL, OPT_SKIP_SPECIAL},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0},
    };
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:h", k_options, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_dir = optarg; break;
        case OPT_FILE: o->file = optarg; break;
        case OPT_JSONL: o->jsonl = optarg; break;
        case OPT_STATS: o->stats = true; break;
        case OPT_DECODE: o->decode = true; break;
        case OPT_SKIP_SPECIAL: o->skip_special = true; break;
        case 'h': printf("%s\n%s", k_usage, k_help); return 1;
        case ':': return cli_usage_error(k_cmd, k_usage, "%s needs a value", argv[optind - 1]);
        default: return cli_usage_error(k_cmd, k_usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) o->text = argv[optind++];
    if (optind < argc)
        return cli_usage_error(k_cmd, k_usage, "unexpected argument '%s' (quote the text)",
                               argv[optind]);
    int n_inputs = (o->text != NULL) + (o->file != NULL) + (o->jsonl != NULL);
    if (n_inputs == 0) return cli_usage_error(k_cmd, k_usage, "give TEXT, --file or --jsonl");
    if (n_inputs > 1)
        return cli_usage_error(k_cmd, k_usage, "give only one of TEXT, --file and --jsonl");
    if (o->skip_special && !o->decode)
        return cli_usage_error(k_cmd, k_usage, "--skip-special needs --decode");
    if (o->stats && o->decode) return cli_usage_error(k_cmd, k_usage, "--stats times encoding only");
    return 0;
}

static char *read_input(const char *path, size_t *size, folo_error *err) {
    if (strcmp(path, "-") != 0) return folo_file_read(path, size, err);
    folo_buf in = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) folo_buf_append(&in, chunk, n);
    if (ferror(stdin)) {
        folo_buf_free(&in);
        folo_fail(err, "cannot read stdin");
        return NULL;
    }
    folo_buf_append(&in, "", 0);
    *size = in.len;
    return in.data;
}

static void append_ids_json(folo_buf *out, const int32_t *ids, int n_ids) {
    folo_buf_puts(out, "[");
    for (int i = 0; i < n_ids; i++) folo_buf_printf(out, i ? ", %d" : "%d", ids[i]);
    folo_buf_puts(out, "]\n");
}

typedef struct encode_stats {
    long long n_tokens;
    double encode_s; /* time inside folo_tokenizer_encode only */
} encode_stats;

/* --decode: text is a JSON array of ids; appends the text as a JSON string. */
static int decode_ids(const folo_tokenizer *tok, const char *text, size_t len, bool skip_special,
                      folo_buf *out, folo_error *err) {
    json_error_t jerr;
    json_t *arr = json_loadb(text, len, 0, &jerr);
    if (!json_is_array(arr)) {
        json_decref(arr);
        return folo_fail(err, "expected a JSON array of token ids");
    }
    int32_t *ids = folo_calloc(json_array_size(arr) + 1, sizeof *ids);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            free(ids);
            json_decref(arr);
            return folo_fail(err, "ids[%zu] is not a token id", i);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    folo_buf decoded = {0};
    folo_tokenizer_decode(tok, ids, (int)json_array_size(arr), skip_special, &decoded);
    json_t *s = json_stringn(folo_buf_str(&decoded), decoded.len);
    folo_chat_write_json(s, out);
    folo_buf_puts(out, "\n");
    json_decref(s);
    folo_buf_free(&decoded);
    free(ids);
    json_decref(arr);
    return 0;
}

static int encode_timed(const folo_tokenizer *tok, const char *text, size_t len, folo_buf *out,
                        encode_stats *stats, folo_error *err) {
    int32_t *ids;
    int n_ids;
    double t0 = folo_now_s();
    int rc = folo_tokenizer_encode(tok, text, len, &ids, &n_ids, err);
    stats->encode_s += folo_now_s() - t0;
    if (rc) return -1;
    stats->n_tokens += n_ids;
    append_ids_json(out, ids, n_ids);
    free(ids);
    return 0;
}

static int process(const folo_tokenizer *tok, const tokenize_opts *o, const char *text,
                   size_t len, folo_buf *out, encode_stats *stats, folo_error *err) {
    return o->decode ? decode_ids(tok, text, len, o->skip_special, out, err)
                     : encode_timed(tok, text, len, out, stats, err);
}

/* One JSON value per line (a string, or an id array with --decode); blank
 * lines are skipped. */
static int process_jsonl(const folo_tokenizer *tok, const tokenize_opts *o, const char *path,
                         folo_buf *out, encode_stats *stats, folo_error *err) {
    size_t size;
    char *data = read_input(path, &size, err);
    if (!data) return -1;
    int rc = 0;
    size_t line_no = 0;
    for (char *line = data; rc == 0 && line < data + size;) {
        char *nl = memchr(line, '\n', (size_t)(data + size - line));
        size_t len = nl ? (size_t)(nl - line) : (size_t)(data + size - line);
        line_no++;
        if (len > 0) {
            json_error_t jerr;
            json_t *v = o->decode ? NULL
                                  : json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
            if (o->decode) {
                if (process(tok, o, line, len, out, stats, err))
                    rc = folo_fail_prefix(err, "%s:%zu", path, line_no);
            } else if (!v) {
                rc = folo_fail(err, "%s:%zu: %s", path, line_no, jerr.text);
            } else if (!json_is_string(v)) {
                rc = folo_fail(err, "%s:%zu: expected a JSON string", path, line_no);
            } else if (encode_timed(tok, json_string_value(v), json_string_length(v), out, stats,
                                    err)) {
                rc = folo_fail_prefix(err, "%s:%zu", path, line_no);
            }
            json_decref(v);
        }
        line = nl ? nl + 1 : data + size;
    }
    free(data);
    return rc;
}

static int run(const tokenize_opts *o, folo_buf *out, encode_stats *stats, folo_error *err) {
    folo_tokenizer *tok = folo_tokenizer_load(o->model_dir ? o->model_dir : cli_tokenizer_dir(), err);
    if (!tok) return -1;
    int rc;
    if (o->jsonl) {
        rc = process_jsonl(tok, o, o->jsonl, out, stats, err);
    } else if (o->file) {
        size_t size;
        char *data = read_input(o->file, &size, err);
        rc = data ? process(tok, o, data, size, out, stats, err) : -1;
        if (rc && data) folo_fail_prefix(err, "%s", o->file);
        free(data);
    } else {
        rc = process(tok, o, o->text, strlen(o->text), out, stats, err);
    }
    folo_tokenizer_free(tok);
    return rc;
}

int folo_cmd_tokenize(int argc, char **argv) {
    tokenize_opts o = {0};
    int parsed = parse_args(argc, argv, &o);
    if (parsed == 1) return 0;
    if (parsed) return parsed;
    folo_buf out = {0};
    encode_stats stats = {0};
    folo_error err = {{0}};
    if (run(&o, &out, &stats, &err)) {
        folo_buf_free(&out);
        fprintf(stderr, "folo %s: %s\n", k_cmd, err.message);
        return 1;
    }
    fwrite(folo_buf_str(&out), 1, out.len, stdout);
    folo_buf_free(&out);
    if (o.stats)
        fprintf(stderr, "tokens: %lld\nencode_s: %.6f\ntokens_per_s: %.0f\n", stats.n_tokens,
                stats.encode_s, stats.encode_s > 0 ? (double)stats.n_tokens / stats.encode_s : 0.0);
    return 0;
}
