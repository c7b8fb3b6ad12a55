/* Byte-level BPE tokenizer (see tokenizer.h for the contract).
 *
 * What it owns: everything loaded from tokenizer.json, converted once into
 * flat tables so that encoding never touches JSON or strings:
 *   - token_bytes: the raw bytes every id decodes to (one arena + offsets);
 *   - vocab: raw bytes -> id for the model's BPE tokens (the file spells them
 *     in the GPT-2 byte-to-printable alphabet; we key them by the bytes they
 *     stand for, which is injective for a byte-level vocabulary and is
 *     checked at load);
 *   - merges: (left id, right id) -> (rank, merged id), an open-addressing
 *     hash table;
 *   - byte_ids: the id of each single byte, the symbols BPE starts from;
 *   - the added tokens, in two matchers (matched on the raw text, or on the
 *     normalized text for those flagged "normalized"), longest first;
 *   - the pre-tokenizer regex, compiled by PCRE2 (JIT when available).
 *
 * Invariants: a loaded tokenizer is never written again, so one instance
 * serves every thread; each encode call owns its scratch (PCRE2 match data,
 * BPE buffers, a word -> ids cache) and frees it before returning.
 *
 * Encoding follows Hugging Face `tokenizers` step for step, because outputs
 * are compared with it byte for byte: added tokens are cut out first
 * (leftmost-longest, with the lstrip/rstrip/single_word rules of
 * added_vocabulary.rs); each remaining span is NFC-normalized (utf8proc),
 * searched again for "normalized" added tokens, split by the regex with
 * behaviour Isolated (matches and the gaps between them are pieces), and
 * each piece is merged by BPE: repeatedly the adjacent pair of lowest merge
 * rank, leftmost on ties. Short pieces use a direct scan, long ones a heap.
 *
 * Decoding maps ids to bytes and repairs invalid UTF-8 with U+FFFD per
 * maximal invalid subsequence (what Rust's from_utf8_lossy and Python's
 * errors='replace' do). The whole-text decoder and the streaming one share
 * one byte-at-a-time state machine, so their outputs are equal by
 * construction.
 *
 * Callers: the engine (prompts, streamed outputs), the server, and the
 * `folo tokenize` / `folo run` commands. */
#include "tokenizer/tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/alloc.h"
#include "core/file.h"

/* ---------------------------------------------------------------- UTF-8 --- */

/* Bytes in the sequence a lead byte opens (1..4); 0 when it opens none. */
static int utf8_seq_len(uint8_t lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

/* Whether b may be continuation byte number `index` (1-based) after lead;
 * the second byte's range excludes overlongs, surrogates and > U+10FFFF. */
static bool utf8_cont_ok(uint8_t lead, int index, uint8_t b) {
    if (index == 1) {
        switch (lead) {
        case 0xE0: return b >= 0xA0 && b <= 0xBF;
        case 0xED: return b >= 0x80 && b <= 0x9F;
        case 0xF0: return b >= 0x90 && b <= 0xBF;
        case 0xF4: return b >= 0x80 && b <= 0x8F;
        default: break;
        }
    }
    return b >= 0x80 && b <= 0xBF;
}

/* Offset of the first byte that does not start a valid sequence, or n. */
static size_t utf8_first_invalid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len = utf8_seq_len(c);
        if (len == 0 || (size_t)len > n - i) return i;
        for (int k = 1; k < len; k++)
            if (!utf8_cont_ok(c, k, s[i + k])) return i;
        i += (size_t)len;
    }
    return n;
}

static const char k_replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* The lossy decoder: feeds bytes, appends complete characters to out, one
 * U+FFFD per maximal invalid subsequence, and keeps the valid beginning of
 * an unfinished sequence in pending[0..*n_pending) for the next call. */
static void utf8_lossy_feed(uint8_t pending[4], int *n_pending, const uint8_t *s, size_t n,
                            folo_buf *out) {
    size_t i = 0;
    while (i < n) {
        if (*n_pending == 0) {
            size_t run = i; /* copy the longest run of complete, valid characters */
            while (i < n) {
                uint8_t c = s[i];
                if (c < 0x80) {
                    i++;
                    continue;
                }
                int len = utf8_seq_len(c);
                if (len == 0 || (size_t)len > n - i) break;
                int k = 1;
                while (k < len && utf8_cont_ok(c, k, s[i + k])) k++;
                if (k < len) break;
                i += (size_t)len;
            }
            if (i > run) folo_buf_append(out, s + run, i - run);
            if (i == n) break;
            if (utf8_seq_len(s[i]) == 0) {
                folo_buf_append(out, k_replacement, 3);
            } else {
                pending[0] = s[i];
                *n_pending = 1;
            }
            i++;
            continue;
        }
        uint8_t lead = pending[0];
        if (utf8_cont_ok(lead, *n_pending, s[i])) {
            pending[(*n_pending)++] = s[i++];
            if (*n_pending == utf8_seq_len(lead)) {
                folo_buf_append(out, pending, (size_t)*n_pending);
                *n_pending = 0;
            }
        } else {
            /* The held bytes are a maximal subpart; s[i] starts afresh. */
            folo_buf_append(out, k_replacement, 3);
            *n_pending = 0;
        }
    }
}

/* ------------------------------------------------------ GPT-2 byte map --- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes (33..126, 161..172,
 * 174..255) stand for themselves; the other 68 bytes take code points 256,
 * 257, ... in byte order. Returns the inverse: code point -> byte, -1 when a
 * code point is not in the alphabet. */
#define BYTE_ALPHABET_END 324
static void byte_alphabet_inverse(int16_t cp_to_byte[BYTE_ALPHABET_END]) {
    for (int cp = 0; cp < BYTE_ALPHABET_END; cp++) cp_to_byte[cp] = -1;
    int n_shifted = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        cp_to_byte[printable ? b : 256 + n_shifted++] = (int16_t)b;
    }
}

/* A token string as `tokenizers`' ByteLevel decoder turns it into bytes:
 * when every character is in the byte alphabet, the bytes it stands for;
 * otherwise the string's own UTF-8 (added tokens such as "<think>" are
 * ASCII and come out unchanged either way). */
static void token_string_bytes(const int16_t *cp_to_byte, const char *str, size_t len,
                               folo_buf *out) {
    size_t start = out->len;
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t used = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (used <= 0 || cp >= BYTE_ALPHABET_END || cp_to_byte[cp] < 0) {
            out->len = start;
            folo_buf_append(out, str, len);
            return;
        }
        uint8_t b = (uint8_t)cp_to_byte[cp];
        folo_buf_append(out, &b, 1);
        i += (size_t)used;
    }
}

/* --------------------------------------------------------- hash tables --- */

static uint64_t hash_bytes(const uint8_t *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, s, n);
    h = (h ^ tail) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return h | 1; /* 0 marks an empty slot */
}

static size_t pow2_at_least(size_t n) {
    size_t cap = 16;
    while (cap < n) cap *= 2;
    return cap;
}

/* Raw token bytes -> id. Keys point into the tokenizer's byte arena. */
typedef struct vocab_slot {
    uint64_t hash; /* 0: empty */
    uint32_t offset, len;
    int32_t id;
} vocab_slot;

typedef struct vocab_map {
    vocab_slot *slots; /* [cap] */
    size_t cap;        /* power of two, at least twice the entries */
} vocab_map;

/* ((left id) << 32 | right id) -> rank and merged id. */
#define MERGE_EMPTY UINT64_MAX
typedef struct merge_slot {
    uint64_t key;
    uint32_t rank;
    int32_t new_id;
} merge_slot;

typedef struct merge_map {
    merge_slot *slots; /* [cap] */
    size_t cap;
} merge_map;

static inline uint64_t merge_key(int32_t left, int32_t right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static inline size_t merge_slot_of(const merge_map *m, uint64_t key) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (m->cap - 1);
}

static inline const merge_slot *merge_find(const merge_map *m, int32_t left, int32_t right) {
    uint64_t key = merge_key(left, right);
    for (size_t i = merge_slot_of(m, key);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == key) return &m->slots[i];
        if (m->slots[i].key == MERGE_EMPTY) return NULL;
    }
}

/* A later duplicate of a pair replaces the earlier rank, as the HashMap
 * `tokenizers` collects the merges into does. */
static void merge_put(merge_map *m, int32_t left, int32_t right, uint32_t rank, int32_t new_id) {
    uint64_t key = merge_key(left, right);
    size_t i = merge_slot_of(m, key);
    while (m->slots[i].key != MERGE_EMPTY && m->slots[i].key != key) i = (i + 1) & (m->cap - 1);
    m->slots[i] = (merge_slot){key, rank, new_id};
}

/* ----------------------------------------------------------- the type --- */

typedef struct added_token {
    char *content;     /* as written in tokenizer.json */
    char *pattern;     /* what is matched: the content, NFC-normalized when `normalized` */
    size_t pattern_len;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} added_token;

/* Added tokens matched in one phase, longest pattern first so that the
 * first hit at a position is the longest one. */
typedef struct added_matcher {
    const added_token **tokens; /* [n_tokens] */
    int n_tokens;
    bool first_byte[256];       /* whether some pattern starts with that byte */
} added_matcher;

enum { ID_KNOWN = 1, ID_SPECIAL = 2 };

struct folo_tokenizer {
    int n_vocab;              /* largest id + 1 */
    uint8_t *id_flags;        /* [n_vocab] ID_KNOWN | ID_SPECIAL */
    uint32_t *bytes_begin;    /* [n_vocab] the bytes of id are bytes_arena[begin, end) */
    uint32_t *bytes_end;      /* [n_vocab] */
    char *bytes_arena;        /* raw bytes of every token, back to back */
    vocab_map vocab;          /* model tokens only (not added ones) */
    merge_map merges;
    int32_t byte_ids[256];    /* id of each single byte; -1 when absent */
    added_token *added;       /* [n_added] */
    int n_added;
    added_matcher raw_matcher;        /* tokens with normalized = false */
    added_matcher normalized_matcher; /* tokens with normalized = true */
    bool nfc;                 /* normalizer: NFC (else none) */
    bool ignore_merges;       /* a piece found whole in the vocab is one token */
    pcre2_code *split_re;     /* the pre-tokenizer's Split pattern */
};

static bool vocab_lookup(const folo_tokenizer *tok, const uint8_t *s, size_t n, int32_t *id) {
    uint64_t h = hash_bytes(s, n);
    const vocab_map *m = &tok->vocab;
    for (size_t i = (size_t)h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const vocab_slot *slot = &m->slots[i];
        if (slot->hash == 0) return false;
        if (slot->hash == h && slot->len == n &&
            memcmp(tok->bytes_arena + slot->offset, s, n) == 0) {
            *id = slot->id;
            return true;
        }
    }
}

/* ------------------------------------------------------------ loading --- */

static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* The optional boolean `key` of obj: absent or null reads as `fallback`. */
static int json_bool_field(const json_t *obj, const char *key, bool fallback, bool *out,
                           const char *where, folo_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = fallback;
        return 0;
    }
    if (!json_is_boolean(v))
        return folo_fail(err, "%s.%s must be a boolean, not %s", where, key, json_type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* Whether an optional string field is absent, null or "". */
static bool json_empty_string_field(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

static int check_normalizer(folo_tokenizer *tok, const json_t *root, folo_error *err) {
    json_t *norm = json_object_get(root, "normalizer");
    if (!norm || json_is_null(norm)) return 0;
    const char *type = json_string_value(json_object_get(norm, "type"));
    if (!type || strcmp(type, "NFC") != 0)
        return folo_fail(err, "normalizer.type '%s' is not supported (only NFC or none)",
                         type ? type : "?");
    tok->nfc = true;
    return 0;
}

/* White_Space, spelled with properties: TAB..CR, NEXT LINE and the Z
 * categories. Oniguruma's \s is exactly this; PCRE2's \s also takes
 * U+180E MONGOLIAN VOWEL SEPARATOR (a space before Unicode 6.3, Cf since). */
#define WHITE_SPACE_CLASS "\\t-\\r\\x{85}\\p{Z}"

/* Rewrites the Oniguruma pattern of tokenizer.json for PCRE2: \s becomes
 * WHITE_SPACE_CLASS (bare, or spliced into an enclosing class), \S its
 * complement. Escaped pairs, classes and POSIX [:name:] items are tracked
 * so that only real \s / \S escapes are touched. */
static int rewrite_pattern(const char *pattern, folo_buf *out, folo_error *err) {
    bool in_class = false;
    for (const char *p = pattern; *p; p++) {
        if (*p == '\\' && p[1]) {
            if (p[1] == 's')
                folo_buf_puts(out, in_class ? WHITE_SPACE_CLASS : "[" WHITE_SPACE_CLASS "]");
            else if (p[1] == 'S' && !in_class)
                folo_buf_puts(out, "[^" WHITE_SPACE_CLASS "]");
            else if (p[1] == 'S')
                return folo_fail(err, "pre_tokenizer Split pattern: \\S inside a class is not "
                                      "supported");
            else
                folo_buf_append(out, p, 2);
            p++;
            continue;
        }
        if (in_class && p[0] == '[' && p[1] == ':') {
            const char *end = strstr(p + 2, ":]");
            size_t n = end ? (size_t)(end + 2 - p) : strlen(p);
            folo_buf_append(out, p, n);
            p += n - 1;
            continue;
        }
        folo_buf_append(out, p, 1);
        if (*p == '[' && !in_class) {
            in_class = true;
            if (p[1] == '^') folo_buf_append(out, ++p, 1);
            if (p[1] == ']') folo_buf_append(out, ++p, 1); /* a literal ] opening the class */
        } else if (*p == ']' && in_class) {
            in_class = false;
        }
    }
    return 0;
}

/* Compiles the Split pattern with Unicode properties (PCRE2_UCP), the
 * semantics of the Oniguruma regex `tokenizers` runs it with: \s is
 * White_Space (see rewrite_pattern), \p{L} / \p{N} are general
 * categories, (?i:'s) folds case by Unicode rules (so "'\u017f" matches).
 * The differential tests probe each of these on every code point. */
static int compile_split_regex(folo_tokenizer *tok, const char *pattern, bool literal,
                               folo_error *err) {
    folo_buf rewritten = {0};
    if (literal) {
        folo_buf_puts(&rewritten, pattern);
    } else if (rewrite_pattern(pattern, &rewritten, err)) {
        folo_buf_free(&rewritten);
        return -1;
    }
    int code;
    PCRE2_SIZE offset;
    uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    tok->split_re = pcre2_compile((PCRE2_SPTR)folo_buf_str(&rewritten), rewritten.len, options,
                                  &code, &offset, NULL);
    folo_buf_free(&rewritten);
    if (!tok->split_re) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(code, message, sizeof message);
        return folo_fail(err, "pre_tokenizer Split pattern: %s at offset %zu", (char *)message,
                         (size_t)offset);
    }
    pcre2_jit_compile(tok->split_re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    return 0;
}

static int load_split(folo_tokenizer *tok, const json_t *split, folo_error *err) {
    const char *behavior = json_string_value(json_object_get(split, "behavior"));
    if (!behavior || strcmp(behavior, "Isolated") != 0)
        return folo_fail(err, "pre_tokenizer Split.behavior '%s' is not supported (only Isolated)",
                         behavior ? behavior : "?");
    bool invert;
    if (json_bool_field(split, "invert", false, &invert, "pre_tokenizer Split", err)) return -1;
    if (invert) return folo_fail(err, "pre_tokenizer Split.invert = true is not supported");
    json_t *pattern = json_object_get(split, "pattern");
    const char *regex = json_string_value(json_object_get(pattern, "Regex"));
    const char *literal = json_string_value(json_object_get(pattern, "String"));
    if (!regex && !literal)
        return folo_fail(err, "pre_tokenizer Split.pattern must hold a \"Regex\" or \"String\"");
    return compile_split_regex(tok, regex ? regex : literal, regex == NULL, err);
}

static int check_byte_level(const json_t *obj, const char *where, folo_error *err) {
    bool add_prefix_space, use_regex;
    if (json_bool_field(obj, "add_prefix_space", false, &add_prefix_space, where, err) ||
        json_bool_field(obj, "use_regex", false, &use_regex, where, err))
        return -1;
    if (add_prefix_space || use_regex)
        return folo_fail(err, "%s: add_prefix_space and use_regex must be false", where);
    return 0;
}

/* Supported: Sequence[Split(Isolated), ByteLevel(no prefix space, no regex)],
 * the byte-level BPE layout of Qwen2/Qwen3 (and Llama 3). */
static int load_pre_tokenizer(folo_tokenizer *tok, const json_t *root, folo_error *err) {
    json_t *pre = json_object_get(root, "pre_tokenizer");
    const char *type = json_string_value(json_object_get(pre, "type"));
    json_t *steps = json_object_get(pre, "pretokenizers");
    if (!type || strcmp(type, "Sequence") != 0 || !json_is_array(steps) ||
        json_array_size(steps) != 2)
        return folo_fail(err, "pre_tokenizer must be a Sequence of [Split, ByteLevel]");
    json_t *split = json_array_get(steps, 0), *byte_level = json_array_get(steps, 1);
    const char *t0 = json_string_value(json_object_get(split, "type"));
    const char *t1 = json_string_value(json_object_get(byte_level, "type"));
    if (!t0 || strcmp(t0, "Split") != 0 || !t1 || strcmp(t1, "ByteLevel") != 0)
        return folo_fail(err, "pre_tokenizer must be a Sequence of [Split, ByteLevel], not "
                              "[%s, %s]", t0 ? t0 : "?", t1 ? t1 : "?");
    if (check_byte_level(byte_level, "pre_tokenizer ByteLevel", err)) return -1;
    return load_split(tok, split, err);
}

static int check_decoder_and_post(const json_t *root, folo_error *err) {
    json_t *dec = json_object_get(root, "decoder");
    const char *type = json_string_value(json_object_get(dec, "type"));
    if (!type || strcmp(type, "ByteLevel") != 0)
        return folo_fail(err, "decoder.type '%s' is not supported (only ByteLevel)",
                         type ? type : "?");
    json_t *post = json_object_get(root, "post_processor");
    if (post && !json_is_null(post)) {
        type = json_string_value(json_object_get(post, "type"));
        if (!type || strcmp(type, "ByteLevel") != 0)
            return folo_fail(err, "post_processor.type '%s' is not supported (only ByteLevel "
                                  "or none)", type ? type : "?");
    }
    return 0;
}

/* The BPE model's options that change ids must be at their plain values. */
static int check_model_options(folo_tokenizer *tok, const json_t *model, folo_error *err) {
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!type || strcmp(type, "BPE") != 0)
        return folo_fail(err, "model.type '%s' is not supported (only BPE)", type ? type : "?");
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
        return folo_fail(err, "model.dropout is not supported");
    json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk)) return folo_fail(err, "model.unk_token is not supported");
    if (!json_empty_string_field(model, "continuing_subword_prefix") ||
        !json_empty_string_field(model, "end_of_word_suffix"))
        return folo_fail(err, "model.continuing_subword_prefix / end_of_word_suffix are not "
                              "supported");
    bool byte_fallback;
    if (json_bool_field(model, "byte_fallback", false, &byte_fallback, "model", err) ||
        json_bool_field(model, "ignore_merges", false, &tok->ignore_merges, "model", err))
        return -1;
    if (byte_fallback) return folo_fail(err, "model.byte_fallback = true is not supported");
    return 0;
}

/* Ids index flat tables, so they are capped well above any real vocabulary. */
#define MAX_TOKEN_ID (1 << 24)

/* Reads the ids of vocab and added tokens to size the tables. */
static int count_ids(const json_t *vocab, const json_t *added, int *n_vocab, folo_error *err) {
    long long max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= MAX_TOKEN_ID)
            return folo_fail(err, "model.vocab[\"%s\"] must be an integer id in [0, %d)", key,
                             MAX_TOKEN_ID);
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    size_t i;
    json_array_foreach((json_t *)added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= MAX_TOKEN_ID)
            return folo_fail(err, "added_tokens[%zu].id must be an integer in [0, %d)", i,
                             MAX_TOKEN_ID);
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    if (max_id < 0) return folo_fail(err, "model.vocab is empty");
    *n_vocab = (int)max_id + 1;
    return 0;
}

/* Fills the bytes of every id and the raw-bytes map of the model vocab.
 * Map keys are offsets into bytes_arena; an added token that reuses a vocab
 * id gets its own bytes appended, while the map keeps the vocab's. */
static int load_vocab(folo_tokenizer *tok, const json_t *vocab, const json_t *added,
                      const int16_t *cp_to_byte, folo_error *err) {
    if (count_ids(vocab, added, &tok->n_vocab, err)) return -1;
    size_t n = (size_t)tok->n_vocab;
    tok->id_flags = folo_calloc(n, 1);
    tok->bytes_begin = folo_calloc(n, sizeof *tok->bytes_begin);
    tok->bytes_end = folo_calloc(n, sizeof *tok->bytes_end);
    tok->vocab.cap = pow2_at_least(2 * json_object_size(vocab));
    tok->vocab.slots = folo_calloc(tok->vocab.cap, sizeof *tok->vocab.slots);
    folo_buf arena = {0};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        if (tok->id_flags[id]) {
            folo_buf_free(&arena);
            return folo_fail(err, "model.vocab: id %d is given to two tokens", id);
        }
        tok->id_flags[id] = ID_KNOWN;
        tok->bytes_begin[id] = (uint32_t)arena.len;
        token_string_bytes(cp_to_byte, key, strlen(key), &arena);
        tok->bytes_end[id] = (uint32_t)arena.len;
        if (arena.len >= UINT32_MAX / 2) {
            folo_buf_free(&arena);
            return folo_fail(err, "model.vocab is too large");
        }
        const uint8_t *bytes = (const uint8_t *)arena.data + tok->bytes_begin[id];
        uint32_t len = tok->bytes_end[id] - tok->bytes_begin[id];
        uint64_t h = hash_bytes(bytes, len);
        size_t slot = (size_t)h & (tok->vocab.cap - 1);
        for (; tok->vocab.slots[slot].hash; slot = (slot + 1) & (tok->vocab.cap - 1)) {
            const vocab_slot *s = &tok->vocab.slots[slot];
            if (s->hash == h && s->len == len && memcmp(arena.data + s->offset, bytes, len) == 0) {
                folo_buf_free(&arena);
                return folo_fail(err, "model.vocab: \"%s\" and id %d stand for the same bytes",
                                 key, s->id);
            }
        }
        tok->vocab.slots[slot] = (vocab_slot){h, tok->bytes_begin[id], len, id};
    }
    size_t i;
    json_array_foreach((json_t *)added, i, v) {
        json_t *content = json_object_get(v, "content");
        if (!json_is_string(content)) {
            folo_buf_free(&arena);
            return folo_fail(err, "added_tokens[%zu].content must be a string", i);
        }
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
        tok->id_flags[id] |= ID_KNOWN;
        tok->bytes_begin[id] = (uint32_t)arena.len;
        token_string_bytes(cp_to_byte, json_string_value(content), json_string_length(content),
                           &arena);
        tok->bytes_end[id] = (uint32_t)arena.len;
    }
    folo_buf_append(&arena, "", 0); /* never NULL, even for an all-empty vocab */
    tok->bytes_arena = arena.data;
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        if (!vocab_lookup(tok, &byte, 1, &tok->byte_ids[b])) tok->byte_ids[b] = -1;
    }
    return 0;
}

/* A merge's two parts, from "a b" (older files) or ["a", "b"]. */
static int merge_parts(const json_t *merge, size_t index, const char **left, size_t *n_left,
                       const char **right, size_t *n_right, folo_error *err) {
    if (json_is_string(merge)) {
        const char *s = json_string_value(merge);
        const char *space = strchr(s, ' ');
        if (!space || strchr(space + 1, ' '))
            return folo_fail(err, "model.merges[%zu] \"%s\" is not two tokens separated by one "
                                  "space", index, s);
        *left = s;
        *n_left = (size_t)(space - s);
        *right = space + 1;
        *n_right = strlen(space + 1);
        return 0;
    }
    if (json_is_array(merge) && json_array_size(merge) == 2 &&
        json_is_string(json_array_get(merge, 0)) && json_is_string(json_array_get(merge, 1))) {
        *left = json_string_value(json_array_get(merge, 0));
        *n_left = json_string_length(json_array_get(merge, 0));
        *right = json_string_value(json_array_get(merge, 1));
        *n_right = json_string_length(json_array_get(merge, 1));
        return 0;
    }
    return folo_fail(err, "model.merges[%zu] must be \"a b\" or [\"a\", \"b\"]", index);
}

static int load_merges(folo_tokenizer *tok, const json_t *merges, const int16_t *cp_to_byte,
                       folo_error *err) {
    if (!json_is_array(merges)) return folo_fail(err, "model.merges must be an array");
    size_t n = json_array_size(merges);
    tok->merges.cap = pow2_at_least(2 * n + 2);
    tok->merges.slots = folo_calloc(tok->merges.cap, sizeof *tok->merges.slots);
    for (size_t i = 0; i < tok->merges.cap; i++) tok->merges.slots[i].key = MERGE_EMPTY;
    folo_buf bytes = {0};
    for (size_t i = 0; i < n; i++) {
        const char *parts[2] = {NULL, NULL};
        size_t lens[2] = {0, 0};
        if (merge_parts(json_array_get(merges, i), i, &parts[0], &lens[0], &parts[1], &lens[1],
                        err)) {
            folo_buf_free(&bytes);
            return -1;
        }
        int32_t ids[3];
        folo_buf_clear(&bytes);
        for (int k = 0; k < 2; k++) {
            size_t before = bytes.len;
            token_string_bytes(cp_to_byte, parts[k], lens[k], &bytes);
            if (!vocab_lookup(tok, (const uint8_t *)bytes.data + before, bytes.len - before,
                              &ids[k])) {
                folo_fail(err, "model.merges[%zu]: \"%.*s\" is not in model.vocab", i,
                          (int)lens[k], parts[k]);
                folo_buf_free(&bytes);
                return -1;
            }
        }
        if (!vocab_lookup(tok, (const uint8_t *)bytes.data, bytes.len, &ids[2])) {
            folo_fail(err, "model.merges[%zu]: the merged token \"%.*s%.*s\" is not in "
                           "model.vocab", i, (int)lens[0], parts[0], (int)lens[1], parts[1]);
            folo_buf_free(&bytes);
            return -1;
        }
        merge_put(&tok->merges, ids[0], ids[1], (uint32_t)i, ids[2]);
    }
    folo_buf_free(&bytes);
    return 0;
}

static char *nfc_copy(const char *s, size_t n, size_t *n_out) {
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                        UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (len < 0) return NULL;
    *n_out = (size_t)len;
    return (char *)dst;
}

static int cmp_longest_first(const void *a, const void *b) {
    const added_token *x = *(const added_token *const *)a, *y = *(const added_token *const *)b;
    if (x->pattern_len != y->pattern_len) return x->pattern_len > y->pattern_len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void build_matcher(added_matcher *m, const folo_tokenizer *tok, bool normalized) {
    m->tokens = folo_calloc((size_t)tok->n_added + 1, sizeof *m->tokens);
    for (int i = 0; i < tok->n_added; i++) {
        const added_token *t = &tok->added[i];
        if (t->normalized != normalized || t->pattern_len == 0) continue;
        m->tokens[m->n_tokens++] = t;
        m->first_byte[(uint8_t)t->pattern[0]] = true;
    }
    qsort(m->tokens, (size_t)m->n_tokens, sizeof *m->tokens, cmp_longest_first);
}

static int load_added(folo_tokenizer *tok, const json_t *added, folo_error *err) {
    if (!json_is_array(added)) return folo_fail(err, "added_tokens must be an array");
    tok->added = folo_calloc(json_array_size(added) + 1, sizeof *tok->added);
    size_t i;
    json_t *v;
    json_array_foreach((json_t *)added, i, v) {
        added_token *t = &tok->added[tok->n_added++];
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        t->id = (int32_t)json_integer_value(json_object_get(v, "id"));
        if (json_bool_field(v, "single_word", false, &t->single_word, where, err) ||
            json_bool_field(v, "lstrip", false, &t->lstrip, where, err) ||
            json_bool_field(v, "rstrip", false, &t->rstrip, where, err) ||
            json_bool_field(v, "normalized", true, &t->normalized, where, err) ||
            json_bool_field(v, "special", false, &t->special, where, err))
            return -1;
        json_t *content = json_object_get(v, "content");
        size_t n = json_string_length(content);
        t->content = folo_strndup(json_string_value(content), n);
        if (t->normalized && tok->nfc) {
            t->pattern = nfc_copy(json_string_value(content), n, &t->pattern_len);
            if (!t->pattern) return folo_fail(err, "%s.content cannot be normalized", where);
        } else {
            t->pattern = folo_strndup(json_string_value(content), n);
            t->pattern_len = n;
        }
        if (t->special) tok->id_flags[t->id] |= ID_SPECIAL;
    }
    build_matcher(&tok->raw_matcher, tok, false);
    build_matcher(&tok->normalized_matcher, tok, true);
    return 0;
}

static int load_json(folo_tokenizer *tok, const json_t *root, folo_error *err) {
    int16_t cp_to_byte[BYTE_ALPHABET_END];
    byte_alphabet_inverse(cp_to_byte);
    json_t *model = json_object_get(root, "model");
    json_t *added = json_object_get(root, "added_tokens");
    json_t *empty = json_array();
    if (!added || json_is_null(added)) added = empty;
    int rc = -1;
    if (!json_is_object(model) || !json_is_object(json_object_get(model, "vocab")))
        folo_fail(err, "model.vocab must be an object");
    else if (!json_is_array(added))
        folo_fail(err, "added_tokens must be an array");
    else if (check_normalizer(tok, root, err) == 0 && load_pre_tokenizer(tok, root, err) == 0 &&
             check_decoder_and_post(root, err) == 0 && check_model_options(tok, model, err) == 0 &&
             load_vocab(tok, json_object_get(model, "vocab"), added, cp_to_byte, err) == 0 &&
             load_merges(tok, json_object_get(model, "merges"), cp_to_byte, err) == 0 &&
             load_added(tok, added, err) == 0)
        rc = 0;
    json_decref(empty);
    return rc;
}

folo_tokenizer *folo_tokenizer_load(const char *model_dir, folo_error *err) {
    char *path = folo_path_join(model_dir, "tokenizer.json");
    size_t size;
    char *text = folo_file_read(path, &size, err);
    if (!text) {
        free(path);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, size, 0, &jerr);
    free(text);
    if (!root) {
        folo_fail(err, "%s: line %d column %d: %s", path, jerr.line, jerr.column, jerr.text);
        free(path);
        return NULL;
    }
    folo_tokenizer *tok = folo_calloc(1, sizeof *tok);
    int rc = json_is_object(root) ? load_json(tok, root, err)
                                  : folo_fail(err, "the top level must be an object");
    json_decref(root);
    if (rc) {
        folo_fail_prefix(err, "%s", path);
        folo_tokenizer_free(tok);
        tok = NULL;
    }
    free(path);
    return tok;
}

void folo_tokenizer_free(folo_tokenizer *tok) {
    if (!tok) return;
    free(tok->id_flags);
    free(tok->bytes_begin);
    free(tok->bytes_end);
    free(tok->bytes_arena);
    free(tok->vocab.slots);
    free(tok->merges.slots);
    for (int i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].pattern);
    }
    free(tok->added);
    free(tok->raw_matcher.tokens);
    free(tok->normalized_matcher.tokens);
    if (tok->split_re) pcre2_code_free(tok->split_re);
    free(tok);
}

int folo_tokenizer_n_vocab(const folo_tokenizer *tok) { return tok->n_vocab; }

int32_t folo_tokenizer_token_id(const folo_tokenizer *tok, const char *content) {
    size_t n = strlen(content);
    for (int i = 0; i < tok->n_added; i++)
        if (strcmp(tok->added[i].content, content) == 0) return tok->added[i].id;
    int32_t id;
    return vocab_lookup(tok, (const uint8_t *)content, n, &id) ? id : -1;
}

bool folo_tokenizer_is_special(const folo_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_vocab && (tok->id_flags[id] & ID_SPECIAL);
}

const char *folo_tokenizer_token_bytes(const folo_tokenizer *tok, int32_t id, size_t *n_bytes) {
    if (id < 0 || id >= tok->n_vocab || !(tok->id_flags[id] & ID_KNOWN)) {
        *n_bytes = 0;
        return NULL;
    }
    *n_bytes = tok->bytes_end[id] - tok->bytes_begin[id];
    return tok->bytes_arena + tok->bytes_begin[id];
}

/* ----------------------------------------------------------- encoding --- */

/* Pieces up to this many bytes are merged by a direct scan; longer ones
 * (long words, whitespace runs) by a heap, to stay O(n log n). */
#define BPE_SCAN_MAX 48
/* Pieces up to this many bytes are remembered for the rest of the call. */
#define CACHE_MAX_BYTES 64

typedef struct cache_slot {
    uint64_t hash; /* 0: empty */
    uint32_t key_offset, key_len;
    uint32_t ids_offset, n_ids;
} cache_slot;

typedef struct heap_entry {
    uint32_t rank;
    uint32_t pos;   /* symbol index of the pair's left side */
    int32_t new_id;
} heap_entry;

/* Scratch owned by one encode call. */
typedef struct encode_ctx {
    const folo_tokenizer *tok;
    int32_t *ids;                /* [cap_ids] the output */
    size_t n_ids, cap_ids;
    pcre2_match_data *match;
    /* word cache: piece bytes -> ids */
    cache_slot *cache;           /* [cache_cap] */
    size_t cache_cap, cache_used;
    folo_buf cache_keys;         /* piece bytes, back to back */
    int32_t *cache_ids;          /* [cap_cache_ids] */
    size_t n_cache_ids, cap_cache_ids;
    /* long-piece BPE */
    int32_t *sym_id;             /* [cap_syms] current token of each symbol */
    int32_t *sym_prev, *sym_next;/* [cap_syms] linked list; -1 at the ends */
    uint8_t *sym_alive;          /* [cap_syms] */
    size_t cap_syms;
    heap_entry *heap;            /* [cap_heap] */
    size_t cap_heap;
} encode_ctx;

static void push_id(encode_ctx *c, int32_t id) {
    if (c->n_ids == c->cap_ids) {
        c->cap_ids *= 2;
        c->ids = folo_realloc(c->ids, c->cap_ids * sizeof *c->ids);
    }
    c->ids[c->n_ids++] = id;
}

/* Merges ids[0..n) in place by a scan for the lowest-rank pair; returns the
 * new count. rank[i] / merged[i] describe the pair (ids[i], ids[i + 1]). */
static int bpe_scan(const merge_map *merges, int32_t *ids, int n) {
    uint32_t rank[BPE_SCAN_MAX];
    int32_t merged[BPE_SCAN_MAX];
    for (int i = 0; i + 1 < n; i++) {
        const merge_slot *m = merge_find(merges, ids[i], ids[i + 1]);
        rank[i] = m ? m->rank : UINT32_MAX;
        merged[i] = m ? m->new_id : -1;
    }
    while (n > 1) {
        int best = 0;
        for (int i = 1; i + 1 < n; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == UINT32_MAX) break;
        ids[best] = merged[best];
        memmove(ids + best + 1, ids + best + 2, (size_t)(n - best - 2) * sizeof *ids);
        int n_pairs_after = n - best - 3; /* pairs right of the removed symbol's pair */
        if (n_pairs_after > 0) {
            memmove(rank + best + 1, rank + best + 2, (size_t)n_pairs_after * sizeof *rank);
            memmove(merged + best + 1, merged + best + 2, (size_t)n_pairs_after * sizeof *merged);
        }
        n--;
        for (int i = best - 1; i <= best; i++) {
            if (i < 0 || i + 1 >= n) continue;
            const merge_slot *m = merge_find(merges, ids[i], ids[i + 1]);
            rank[i] = m ? m->rank : UINT32_MAX;
            merged[i] = m ? m->new_id : -1;
        }
    }
    return n;
}

static bool heap_less(const heap_entry *a, const heap_entry *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(encode_ctx *c, size_t *n, heap_entry e) {
    if (*n == c->cap_heap) {
        c->cap_heap = c->cap_heap ? 2 * c->cap_heap : 256;
        c->heap = folo_realloc(c->heap, c->cap_heap * sizeof *c->heap);
    }
    size_t i = (*n)++;
    while (i > 0 && heap_less(&e, &c->heap[(i - 1) / 2])) {
        c->heap[i] = c->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    c->heap[i] = e;
}

static heap_entry heap_pop(encode_ctx *c, size_t *n) {
    heap_entry top = c->heap[0], last = c->heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && heap_less(&c->heap[child + 1], &c->heap[child])) child++;
        if (!heap_less(&c->heap[child], &last)) break;
        c->heap[i] = c->heap[child];
        i = child;
    }
    if (*n > 0) c->heap[i] = last;
    return top;
}

static void heap_push_pair(encode_ctx *c, size_t *n_heap, int32_t pos) {
    const merge_slot *m = merge_find(&c->tok->merges, c->sym_id[pos], c->sym_id[c->sym_next[pos]]);
    if (m) heap_push(c, n_heap, (heap_entry){m->rank, (uint32_t)pos, m->new_id});
}

/* The same merges as bpe_scan for pieces of any length: a min-heap of
 * candidate pairs (rank, then position), entries checked on pop because a
 * neighbour's merge may have changed the pair since it was pushed. */
static void bpe_heap(encode_ctx *c, const int32_t *ids, size_t n) {
    if (n > c->cap_syms) {
        c->cap_syms = n;
        c->sym_id = folo_realloc(c->sym_id, n * sizeof *c->sym_id);
        c->sym_prev = folo_realloc(c->sym_prev, n * sizeof *c->sym_prev);
        c->sym_next = folo_realloc(c->sym_next, n * sizeof *c->sym_next);
        c->sym_alive = folo_realloc(c->sym_alive, n);
    }
    for (size_t i = 0; i < n; i++) {
        c->sym_id[i] = ids[i];
        c->sym_prev[i] = (int32_t)i - 1;
        c->sym_next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        c->sym_alive[i] = 1;
    }
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) heap_push_pair(c, &n_heap, (int32_t)i);
    while (n_heap > 0) {
        heap_entry top = heap_pop(c, &n_heap);
        int32_t pos = (int32_t)top.pos, next = c->sym_next[pos];
        if (!c->sym_alive[pos] || next < 0) continue;
        const merge_slot *m = merge_find(&c->tok->merges, c->sym_id[pos], c->sym_id[next]);
        if (!m || m->new_id != top.new_id) continue; /* stale entry */
        c->sym_id[pos] = top.new_id;
        c->sym_alive[next] = 0;
        c->sym_next[pos] = c->sym_next[next];
        if (c->sym_next[pos] >= 0) c->sym_prev[c->sym_next[pos]] = pos;
        if (c->sym_prev[pos] >= 0) heap_push_pair(c, &n_heap, c->sym_prev[pos]);
        if (c->sym_next[pos] >= 0) heap_push_pair(c, &n_heap, pos);
    }
    for (int32_t i = 0; i >= 0; i = c->sym_next[i]) push_id(c, c->sym_id[i]);
}

static cache_slot *cache_find(encode_ctx *c, const uint8_t *s, size_t n, uint64_t h) {
    for (size_t i = (size_t)h & (c->cache_cap - 1);; i = (i + 1) & (c->cache_cap - 1)) {
        cache_slot *slot = &c->cache[i];
        if (slot->hash == 0) return slot;
        if (slot->hash == h && slot->key_len == n &&
            memcmp(c->cache_keys.data + slot->key_offset, s, n) == 0)
            return slot;
    }
}

static void cache_grow(encode_ctx *c) {
    cache_slot *old = c->cache;
    size_t old_cap = c->cache_cap;
    c->cache_cap = old_cap ? 2 * old_cap : 4096;
    c->cache = folo_calloc(c->cache_cap, sizeof *c->cache);
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].hash) continue;
        size_t j = (size_t)old[i].hash & (c->cache_cap - 1);
        while (c->cache[j].hash) j = (j + 1) & (c->cache_cap - 1);
        c->cache[j] = old[i];
    }
    free(old);
}

static void cache_put(encode_ctx *c, const uint8_t *s, size_t n, uint64_t h, const int32_t *ids,
                      size_t n_ids) {
    if (2 * (c->cache_used + 1) > c->cache_cap) cache_grow(c);
    cache_slot *slot = cache_find(c, s, n, h);
    if (c->n_cache_ids + n_ids > c->cap_cache_ids) {
        while (c->n_cache_ids + n_ids > c->cap_cache_ids)
            c->cap_cache_ids = c->cap_cache_ids ? 2 * c->cap_cache_ids : 4096;
        c->cache_ids = folo_realloc(c->cache_ids, c->cap_cache_ids * sizeof *c->cache_ids);
    }
    *slot = (cache_slot){h, (uint32_t)c->cache_keys.len, (uint32_t)n,
                         (uint32_t)c->n_cache_ids, (uint32_t)n_ids};
    folo_buf_append(&c->cache_keys, s, n);
    if (n_ids) memcpy(c->cache_ids + c->n_cache_ids, ids, n_ids * sizeof *ids);
    c->n_cache_ids += n_ids;
    c->cache_used++;
}

/* One pre-tokenized piece -> ids appended to the output. */
static void encode_piece(encode_ctx *c, const uint8_t *s, size_t n) {
    const folo_tokenizer *tok = c->tok;
    if (n == 1) {
        if (tok->byte_ids[s[0]] >= 0) push_id(c, tok->byte_ids[s[0]]);
        return;
    }
    int32_t whole;
    if (tok->ignore_merges && vocab_lookup(tok, s, n, &whole)) {
        push_id(c, whole);
        return;
    }
    uint64_t h = 0;
    if (n <= CACHE_MAX_BYTES) {
        h = hash_bytes(s, n);
        if (c->cache_cap) {
            const cache_slot *slot = cache_find(c, s, n, h);
            if (slot->hash) {
                for (uint32_t i = 0; i < slot->n_ids; i++)
                    push_id(c, c->cache_ids[slot->ids_offset + i]);
                return;
            }
        }
    }
    /* Start from one symbol per byte; bytes without a token are dropped,
     * as `tokenizers` drops characters missing from a vocab without unk. */
    size_t first = c->n_ids;
    for (size_t i = 0; i < n; i++)
        if (tok->byte_ids[s[i]] >= 0) push_id(c, tok->byte_ids[s[i]]);
    size_t n_syms = c->n_ids - first;
    if (n_syms <= BPE_SCAN_MAX) {
        c->n_ids = first + (size_t)bpe_scan(&tok->merges, c->ids + first, (int)n_syms);
    } else {
        int32_t *start = folo_calloc(n_syms, sizeof *start);
        memcpy(start, c->ids + first, n_syms * sizeof *start);
        c->n_ids = first;
        bpe_heap(c, start, n_syms);
        free(start);
    }
    if (n <= CACHE_MAX_BYTES) cache_put(c, s, n, h, c->ids + first, c->n_ids - first);
}

/* Pre-tokenization: regex matches and the gaps between them are pieces. */
static int encode_pretokenize(encode_ctx *c, const char *s, size_t n, folo_error *err) {
    const uint8_t *u = (const uint8_t *)s;
    size_t gap = 0, search = 0; /* the current gap starts at `gap` */
    while (search < n) {
        int rc = pcre2_match(c->tok->split_re, (PCRE2_SPTR)s, n, search, PCRE2_NO_UTF_CHECK,
                             c->match, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(rc, message, sizeof message);
            return folo_fail(err, "pre-tokenizer regex failed at byte %zu: %s", search,
                             (char *)message);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->match);
        size_t start = ov[0], end = ov[1];
        if (end == start) { /* an empty match is no piece: search on from the next character */
            if (start >= n) break;
            search = start + (size_t)(utf8_seq_len(u[start]) ? utf8_seq_len(u[start]) : 1);
            continue;
        }
        if (start > gap) encode_piece(c, u + gap, start - gap);
        encode_piece(c, u + start, end - start);
        gap = search = end;
    }
    if (gap < n) encode_piece(c, u + gap, n - gap);
    return 0;
}

/* Whether code point cp has the Unicode White_Space property: the Z
 * categories plus TAB..CR and NEXT LINE. */
static bool is_white_space(utf8proc_int32_t cp) {
    if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x85) return true;
    utf8proc_category_t cat = utf8proc_category(cp);
    return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
           cat == UTF8PROC_CATEGORY_ZP;
}

/* Whether cp is a regex word character (\w): letters, marks, decimal and
 * letter numbers, connector punctuation, ZWNJ/ZWJ. */
static bool is_word_char(utf8proc_int32_t cp) {
    if (cp == 0x200C || cp == 0x200D) return true;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* The code point that ends s[0..n) (n > 0, valid UTF-8) and its offset. */
static utf8proc_int32_t last_char(const uint8_t *s, size_t n, size_t *at) {
    size_t i = n - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    utf8proc_int32_t cp = 0;
    utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
    *at = i;
    return cp;
}

static utf8proc_int32_t first_char(const uint8_t *s, size_t n, size_t *len) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t used = utf8proc_iterate(s, (utf8proc_ssize_t)n, &cp);
    *len = used > 0 ? (size_t)used : 1;
    return cp;
}

static const added_token *added_match_at(const added_matcher *m, const uint8_t *s, size_t n,
                                         size_t pos) {
    for (int i = 0; i < m->n_tokens; i++) {
        const added_token *t = m->tokens[i];
        if (t->pattern_len <= n - pos && memcmp(s + pos, t->pattern, t->pattern_len) == 0)
            return t;
    }
    return NULL;
}

static int encode_segment(encode_ctx *c, const char *s, size_t n, bool normalized_phase,
                          folo_error *err);

/* A span with no added token of the current phase: in the first phase it
 * is normalized and searched for normalized added tokens; in the second it
 * is pre-tokenized. */
static int encode_gap(encode_ctx *c, const char *s, size_t n, bool normalized_phase,
                      folo_error *err) {
    if (n == 0) return 0;
    if (normalized_phase) return encode_pretokenize(c, s, n, err);
    bool ascii = true;
    for (size_t i = 0; i < n && ascii; i++) ascii = (uint8_t)s[i] < 0x80;
    if (!c->tok->nfc || ascii) return encode_segment(c, s, n, true, err);
    size_t n_norm;
    char *norm = nfc_copy(s, n, &n_norm);
    if (!norm) return folo_fail(err, "NFC normalization failed");
    int rc = encode_segment(c, norm, n_norm, true, err);
    free(norm);
    return rc;
}

/* Cuts the added tokens of one phase out of s (added_vocabulary.rs's
 * find_matches: leftmost-longest matches, single_word, lstrip, rstrip). */
static int encode_segment(encode_ctx *c, const char *s, size_t n, bool normalized_phase,
                          folo_error *err) {
    const added_matcher *m = normalized_phase ? &c->tok->normalized_matcher
                                              : &c->tok->raw_matcher;
    const uint8_t *u = (const uint8_t *)s;
    size_t done = 0; /* everything before is encoded */
    size_t pos = 0;  /* where the search goes on */
    while (m->n_tokens > 0 && pos < n) {
        if (!m->first_byte[u[pos]]) {
            pos++;
            continue;
        }
        const added_token *t = added_match_at(m, u, n, pos);
        if (!t) {
            pos++;
            continue;
        }
        size_t start = pos, stop = pos + t->pattern_len, at, len;
        pos = stop;
        if (t->single_word) {
            bool word_before = start > 0 && is_word_char(last_char(u, start, &at));
            bool word_after = stop < n && is_word_char(first_char(u + stop, n - stop, &len));
            if (word_before || word_after) continue;
        }
        if (t->lstrip) {
            size_t new_start = start;
            while (new_start > 0 && is_white_space(last_char(u, new_start, &at))) new_start = at;
            start = new_start > done ? new_start : done;
        }
        if (t->rstrip) {
            while (stop < n && is_white_space(first_char(u + stop, n - stop, &len))) stop += len;
        }
        if (done < start && encode_gap(c, s + done, start - done, normalized_phase, err))
            return -1;
        push_id(c, t->id);
        done = stop;
    }
    return encode_gap(c, s + done, n > done ? n - done : 0, normalized_phase, err);
}

int folo_tokenizer_encode(const folo_tokenizer *tok, const char *text, size_t len,
                          int32_t **ids, int *n_ids, folo_error *err) {
    *ids = NULL;
    *n_ids = 0;
    size_t bad = utf8_first_invalid((const uint8_t *)text, len);
    if (bad < len)
        return folo_fail(err, "invalid UTF-8 at byte offset %zu (byte 0x%02x)", bad,
                         (uint8_t)text[bad]);
    encode_ctx c = {.tok = tok, .cap_ids = 256};
    c.ids = folo_calloc(c.cap_ids, sizeof *c.ids);
    c.match = pcre2_match_data_create_from_pattern(tok->split_re, NULL);
    int rc = encode_segment(&c, text, len, false, err);
    if (rc == 0 && c.n_ids > (size_t)INT32_MAX) rc = folo_fail(err, "text is too long");
    pcre2_match_data_free(c.match);
    free(c.cache);
    folo_buf_free(&c.cache_keys);
    free(c.cache_ids);
    free(c.sym_id);
    free(c.sym_prev);
    free(c.sym_next);
    free(c.sym_alive);
    free(c.heap);
    if (rc) {
        free(c.ids);
        return -1;
    }
    *ids = c.ids;
    *n_ids = (int)c.n_ids;
    return 0;
}

/* ----------------------------------------------------------- decoding --- */

void folo_detokenizer_init(folo_detokenizer *d, const folo_tokenizer *tok, bool skip_special) {
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->skip_special = skip_special;
}

void folo_detokenizer_push(folo_detokenizer *d, int32_t id, folo_buf *out) {
    if (d->skip_special && folo_tokenizer_is_special(d->tok, id)) return;
    size_t n;
    const char *bytes = folo_tokenizer_token_bytes(d->tok, id, &n);
    if (bytes) utf8_lossy_feed(d->pending, &d->n_pending, (const uint8_t *)bytes, n, out);
}

void folo_detokenizer_flush(folo_detokenizer *d, folo_buf *out) {
    if (d->n_pending) folo_buf_append(out, k_replacement, 3);
    d->n_pending = 0;
}

void folo_tokenizer_decode(const folo_tokenizer *tok, const int32_t *ids, int n_ids,
                           bool skip_special, folo_buf *out) {
    folo_detokenizer d;
    folo_detokenizer_init(&d, tok, skip_special);
    for (int i = 0; i < n_ids; i++) folo_detokenizer_push(&d, ids[i], out);
    folo_detokenizer_flush(&d, out);
    if (!out->data) folo_buf_append(out, "", 0);
}
