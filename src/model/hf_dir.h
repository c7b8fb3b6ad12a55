/* Writing a Hugging Face model directory's small files, shared by the
 * commands that write checkpoints (`folo make-model`, `folo quantize`):
 * JSON files written whole or not at all (through a temporary file and a
 * rename), the tokenizer files copied byte for byte, stale files of another
 * layout removed. The weights themselves go through safetensors.h's
 * writer. */
#ifndef FOLO_MODEL_HF_DIR_H
#define FOLO_MODEL_HF_DIR_H

#include <jansson.h>
#include <stdbool.h>

#include "core/error.h"

/* Writes `root` (consumed; NULL is a broken invariant) as dir/name, indented,
 * keys sorted. */
int folo_hf_write_json(const char *dir, const char *name, json_t *root, folo_error *err);

/* Copies from_dir/name to to_dir/name; a missing source is an error when
 * `required`, else nothing is done. */
int folo_hf_copy_file(const char *from_dir, const char *to_dir, const char *name, bool required,
                      folo_error *err);

/* Copies the tokenizer files: tokenizer.json and tokenizer_config.json
 * (required), vocab.json, merges.txt, special_tokens_map.json and
 * added_tokens.json (when present). */
int folo_hf_copy_tokenizer(const char *from_dir, const char *to_dir, folo_error *err);

/* Removes dir/name if present. */
int folo_hf_remove_stale(const char *dir, const char *name, folo_error *err);

#endif
