/* The calibration data of `folo quantize`: n_samples windows of seq_len
 * tokens cut from a text.
 *
 * The text is a ShareGPT file (a name ending in .json: every turn of every
 * conversation, in the file's order, each followed by a blank line; read by
 * bench/dataset.h's loader) or any other file read as UTF-8 text whole. It
 * is tokenized with the model's tokenizer into one stream of S tokens, and
 * each window starts at an offset drawn uniformly from [0, S - seq_len]
 * with the seed, so windows overlap only when the text is short (the GPTQ
 * reference draws its WikiText-2 samples so). A stream shorter than one
 * window is an error naming the file and both lengths. */
#ifndef FOLO_QUANT_CALIB_H
#define FOLO_QUANT_CALIB_H

#include <stdint.h>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

typedef struct folo_calib {
    int n_samples;
    int seq_len;
    int32_t *ids;      /* [n_samples, seq_len] */
    int64_t n_stream;  /* S, tokens of the whole text */
} folo_calib;

int folo_calib_load(folo_calib *c, const char *path, const folo_tokenizer *tok, int n_samples,
                    int seq_len, uint64_t seed, folo_error *err);
void folo_calib_free(folo_calib *c);

#endif
