/* folo: the command-line entry point. Dispatches to one subcommand; see
 * `folo --help` and `folo <command> --help`. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command k_commands[] = {
    {"run", folo_cmd_run, "generate from one prompt, streamed to the terminal"},
    {"generate", folo_cmd_generate, "offline batch: JSONL prompts in, JSONL completions out"},
    {"serve", folo_cmd_serve, "OpenAI-compatible HTTP server (completions, chat, SSE streaming)"},
    {"bench", folo_cmd_bench, "latency and throughput benchmarks with vLLM's serving metrics"},
    {"tokenize", folo_cmd_tokenize, "print the token ids of a text as a JSON array"},
    {"template", folo_cmd_template, "render chat messages in the model's chat format"},
    {"logits", folo_cmd_logits, "write raw float32 logits of every position of a token list"},
    {"perplexity", folo_cmd_perplexity, "perplexity of a text; KL divergence against a base model"},
    {"make-model", folo_cmd_make_model, "write a synthetic Qwen3 checkpoint (random weights, real tokenizer)"},
    {"quantize", folo_cmd_quantize, "quantize a checkpoint to 4-bit GPTQ (GPTQ or round-to-nearest)"},
};
#define N_COMMANDS (sizeof k_commands / sizeof k_commands[0])

static void print_help(FILE *out) {
    fprintf(out, "usage: folo <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-11s %s\n", k_commands[i].name, k_commands[i].summary);
    fprintf(out, "\n`folo <command> --help` describes each command's options.\n"
                 "Without -m, commands use a synthetic Qwen3-0.6B-shaped model created on first use.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("folo " FOLO_VERSION "\n");
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], k_commands[i].name) == 0) return k_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "folo: unknown command '%s'\n\n", argv[1]);
    print_help(stderr);
    return 2;
}
