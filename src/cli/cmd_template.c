/* folo template: renders a JSON conversation in the Qwen3 chat format and
 * prints the text a prompt would be built from. --jsonl renders many
 * conversations in one process, each with its own options, and prints one
 * JSON string per line (the differential tests against transformers'
 * apply_chat_template use it). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/file.h"
#include "tokenizer/chat.h"

static const char k_cmd[] = "template";
static const char k_usage[] =
    "usage: folo template [-m DIR] [--no-generation-prompt] [--no-thinking] [--jsonl] FILE\n";
static const char k_help[] =
    "Renders the conversation in FILE ('-' reads stdin) in the Qwen3 chat format.\n"
    "FILE holds a JSON messages array, or an object with \"messages\" (and optionally\n"
    "\"tools\"), as in an OpenAI chat request.\n\n"
    "  -m, --model DIR           check that DIR's tokenizer_config.json has the Qwen3 chat\n"
    "                            template (the only format folo renders)\n"
    "  --no-generation-prompt    do not end with the opening of the assistant's turn\n"
    "  --no-thinking             open the assistant's turn with an empty <think> block\n"
    "  --jsonl                   every line of FILE is an object {\"messages\": [...],\n"
    "                            \"add_generation_prompt\": bool, \"enable_thinking\": bool,\n"
    "                            \"tools\": [...]} (absent flags: false / true, as in\n"
    "                            transformers); prints one JSON string per line\n"
    "  -h, --help                show this help\n";

typedef struct template_opts {
    const char *model_dir;
    const char *file;
    bool no_generation_prompt, no_thinking, jsonl;
} template_opts;

enum { OPT_NO_GEN = 256, OPT_NO_THINK, OPT_JSONL };

/* 0: parsed, 1: help printed, 2: usage error (printed). */
static int parse_args(int argc, char **argv, template_opts *o) {
    static const struct option k_options[] = {
        {"model", required_argument, NULL, 'm'},
        {"no-generation-prompt", no_argument, NULL, OPT_NO_GEN},
        {"no-thinking", no_argument, NULL, OPT_NO_THINK},
        {"jsonl", no_argument, NULL, OPT_JSONL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:h", k_options, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_dir = optarg; break;
        case OPT_NO_GEN: o->no_generation_prompt = true; break;
        case OPT_NO_THINK: o->no_thinking = true; break;
        case OPT_JSONL: o->jsonl = true; break;
        case 'h': printf("%s\n%s", k_usage, k_help); return 1;
        case ':': return cli_usage_error(k_cmd, k_usage, "%s needs a value", argv[optind - 1]);
        default: return cli_usage_error(k_cmd, k_usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind == argc) return cli_usage_error(k_cmd, k_usage, "FILE is required");
    o->file = argv[optind++];
    if (optind < argc) return cli_usage_error(k_cmd, k_usage, "unexpected argument '%s'", argv[optind]);
    if (o->jsonl && (o->no_generation_prompt || o->no_thinking))
        return cli_usage_error(k_cmd, k_usage,
                               "with --jsonl each line sets add_generation_prompt and "
                               "enable_thinking");
    return 0;
}

/* The chat template of DIR must be Qwen3's: its thinking rules are what
 * chat.c implements. */
static int check_model_template(const char *dir, folo_error *err) {
    char *path = folo_path_join(dir, "tokenizer_config.json");
    json_error_t jerr;
    json_t *config = json_load_file(path, 0, &jerr);
    int rc = 0;
    if (!config) {
        rc = folo_fail(err, "%s: %s", path, jerr.text);
    } else {
        const char *tmpl = json_string_value(json_object_get(config, "chat_template"));
        if (!tmpl)
            rc = folo_fail(err, "%s: chat_template must be a string", path);
        else if (!strstr(tmpl, "ns.last_query_index") || !strstr(tmpl, "enable_thinking") ||
                 !strstr(tmpl, "<tool_response>"))
            rc = folo_fail(err, "%s: chat_template is not the Qwen3 template (the only chat "
                                "format folo renders)", path);
    }
    json_decref(config);
    free(path);
    return rc;
}

static char *read_input(const char *path, size_t *size, folo_error *err) {
    if (strcmp(path, "-") != 0) return folo_file_read(path, size, err);
    folo_buf in = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) folo_buf_append(&in, chunk, n);
    folo_buf_append(&in, "", 0);
    *size = in.len;
    return in.data;
}

/* Renders one document; the document's own flags win over the defaults. */
static int render_document(json_t *doc, bool add_generation_prompt, bool enable_thinking,
                           folo_buf *out, folo_error *err) {
    folo_chat_conversation conv;
    if (folo_chat_from_json(doc, &conv, err)) return -1;
    folo_chat_options opt = {
        .add_generation_prompt =
            conv.add_generation_prompt >= 0 ? conv.add_generation_prompt : add_generation_prompt,
        .enable_thinking = conv.enable_thinking >= 0 ? conv.enable_thinking : enable_thinking,
        .tools_json = (const char *const *)conv.tools_json,
        .n_tools = conv.n_tools,
    };
    int rc = folo_chat_render(conv.messages, conv.n_messages, &opt, out, err);
    folo_chat_conversation_free(&conv);
    return rc;
}

static int render_jsonl(const char *path, char *data, size_t size, folo_buf *out,
                        folo_error *err) {
    folo_buf text = {0};
    int rc = 0;
    size_t line_no = 0;
    for (char *line = data; rc == 0 && line < data + size;) {
        char *nl = memchr(line, '\n', (size_t)(data + size - line));
        size_t len = nl ? (size_t)(nl - line) : (size_t)(data + size - line);
        line_no++;
        if (len > 0) {
            json_error_t jerr;
            json_t *doc = json_loadb(line, len, 0, &jerr);
            if (!doc) {
                rc = folo_fail(err, "%s:%zu: %s", path, line_no, jerr.text);
            } else if (!json_is_object(doc)) {
                rc = folo_fail(err, "%s:%zu: expected an object with \"messages\"", path, line_no);
            } else {
                folo_buf_clear(&text);
                if (render_document(doc, false, true, &text, err)) {
                    rc = folo_fail_prefix(err, "%s:%zu", path, line_no);
                } else {
                    json_t *s = json_stringn(folo_buf_str(&text), text.len);
                    folo_chat_write_json(s, out);
                    folo_buf_puts(out, "\n");
                    json_decref(s);
                }
            }
            json_decref(doc);
        }
        line = nl ? nl + 1 : data + size;
    }
    folo_buf_free(&text);
    return rc;
}

static int run(const template_opts *o, folo_buf *out, folo_error *err) {
    if (o->model_dir && check_model_template(o->model_dir, err)) return -1;
    size_t size;
    char *data = read_input(o->file, &size, err);
    if (!data) return -1;
    int rc;
    if (o->jsonl) {
        rc = render_jsonl(o->file, data, size, out, err);
    } else {
        json_error_t jerr;
        json_t *doc = json_loadb(data, size, JSON_DECODE_ANY, &jerr);
        if (!doc) {
            rc = folo_fail(err, "%s: line %d column %d: %s", o->file, jerr.line, jerr.column,
                           jerr.text);
        } else {
            /* Only the flags decide here; a document's own fields are for --jsonl. */
            json_t *plain = doc;
            if (json_is_object(doc)) {
                plain = json_deep_copy(doc);
                json_object_del(plain, "add_generation_prompt");
                json_object_del(plain, "enable_thinking");
                json_object_del(plain, "chat_template_kwargs");
            } else {
                json_incref(plain);
            }
            rc = render_document(plain, !o->no_generation_prompt, !o->no_thinking, out, err);
            if (rc) folo_fail_prefix(err, "%s", o->file);
            json_decref(plain);
        }
        json_decref(doc);
    }
    free(data);
    return rc;
}

int folo_cmd_template(int argc, char **argv) {
    template_opts o = {0};
    int parsed = parse_args(argc, argv, &o);
    if (parsed == 1) return 0;
    if (parsed) return parsed;
    folo_buf out = {0};
    folo_error err = {{0}};
    if (run(&o, &out, &err)) {
        folo_buf_free(&out);
        fprintf(stderr, "folo %s: %s\n", k_cmd, err.message);
        return 1;
    }
    fwrite(folo_buf_str(&out), 1, out.len, stdout);
    folo_buf_free(&out);
    return 0;
}
