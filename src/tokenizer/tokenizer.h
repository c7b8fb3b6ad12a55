/* Byte-level BPE tokenizer, exactly as Hugging Face `tokenizers` runs the
 * Qwen3 tokenizer.json:
 *   added/special tokens are matched first (longest match, leftmost) and
 *   emitted as their ids; every other span is NFC-normalized (utf8proc),
 *   split by the file's pre-tokenizer regex (PCRE2, behaviour Isolated),
 *   mapped byte-to-printable-codepoint (GPT-2 ByteLevel), and merged by BPE
 *   with merges ranked by their order in the file ("a b" strings or
 *   ["a", "b"] pairs). No BOS is added.
 * Decoding maps tokens back to raw bytes; the streaming detokenizer holds
 * back an incomplete UTF-8 sequence until its last byte arrives, so a
 * stream never shows half a character (invalid bytes become U+FFFD, as
 * `tokenizers` decodes them). A loaded tokenizer is immutable and safe to
 * share between threads.
 *
 * Known differences from `tokenizers` 0.23, both from the Unicode data of
 * the libraries: its NFC tables are old and lack the combining class of
 * about 100 recent marks (e.g. U+08D1, U+09FE, U+1AC1, U+1DF6), which
 * folo (utf8proc, Unicode 15) reorders and it does not; PCRE2 10.42
 * (Unicode 14) does not yet count the Kaktovik numerals U+1D2C0..U+1D2D3
 * as \p{N}. tests/python/test_tokenizer.py sweeps every other code point
 * through the pre-tokenizer and finds no difference. */
#ifndef FOLO_TOKENIZER_TOKENIZER_H
#define FOLO_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/error.h"

typedef struct folo_tokenizer folo_tokenizer;

/* Loads model_dir/tokenizer.json. Unsupported settings (another normalizer,
 * pre-tokenizer, model or decoder type) are errors naming the field. */
folo_tokenizer *folo_tokenizer_load(const char *model_dir, folo_error *err);
void folo_tokenizer_free(folo_tokenizer *tok);

/* Number of ids (largest id + 1, added tokens included). */
int folo_tokenizer_n_vocab(const folo_tokenizer *tok);

/* Encodes text[0..len) (must be valid UTF-8, else an error naming the byte
 * offset). *ids is allocated (caller frees), *n_ids its length. Special
 * tokens written in the text are recognized (as `tokenizers` does by
 * default). */
int folo_tokenizer_encode(const folo_tokenizer *tok, const char *text, size_t len,
                          int32_t **ids, int *n_ids, folo_error *err);

/* Id of a token given its content: an added token's text (e.g.
 * "<|im_end|>"), or the raw bytes a model token stands for (" the", not
 * the file's "Ġthe"); -1 when there is none. */
int32_t folo_tokenizer_token_id(const folo_tokenizer *tok, const char *content);
/* Whether id is an added token marked "special": true in tokenizer.json. */
bool folo_tokenizer_is_special(const folo_tokenizer *tok, int32_t id);
/* Raw bytes id decodes to; NULL (and *n_bytes = 0) for an unknown id. An
 * added token's bytes follow `tokenizers`' ByteLevel decoder: its content
 * read through the byte alphabet when every character is in it (all ASCII
 * contents come out unchanged), else its UTF-8 as is. */
const char *folo_tokenizer_token_bytes(const folo_tokenizer *tok, int32_t id, size_t *n_bytes);

/* Decodes a whole sequence into out (appended), invalid UTF-8 replaced by
 * U+FFFD; special tokens are dropped when skip_special. */
void folo_tokenizer_decode(const folo_tokenizer *tok, const int32_t *ids, int n_ids,
                           bool skip_special, folo_buf *out);

/* Streaming decoder: one per output stream. */
typedef struct folo_detokenizer {
    const folo_tokenizer *tok;
    bool skip_special;
    uint8_t pending[4];  /* bytes of an incomplete UTF-8 sequence */
    int n_pending;
} folo_detokenizer;

void folo_detokenizer_init(folo_detokenizer *d, const folo_tokenizer *tok, bool skip_special);
/* Appends to out the text that token id completes (possibly nothing). */
void folo_detokenizer_push(folo_detokenizer *d, int32_t id, folo_buf *out);
/* End of stream: an incomplete sequence still held becomes U+FFFD. */
void folo_detokenizer_flush(folo_detokenizer *d, folo_buf *out);

#endif
