/* The CPU backend's forward, one decoder layer at a time, on hidden states
 * the caller holds: how `folo quantize` (src/quant/quantize.h) computes the
 * input of every linear on its calibration data with the very code that
 * serves the model, rather than a second copy of the forward pass.
 *
 * A layer is two halves, each ending in a residual add (DESIGN §4):
 * attention (steps 1-6) and MLP (step 7). A run goes through one half and
 * stops at a tap: the input of one of its linears, returned before that
 * linear runs, or the end of the half, where x has taken the half's output.
 * After the last layer, folo_cpu_final_norm gives lm_head's input.
 * The layer's weights are read from the backend's model at each call, so a
 * caller that owns the model may swap a linear's tensor between calls (the
 * quantizer puts in each linear's dequantized weights once it has them);
 * the norm weights were converted when the backend was created. */
#ifndef FOLO_BACKEND_CPU_CPU_BACKEND_H
#define FOLO_BACKEND_CPU_CPU_BACKEND_H

#include "backend/backend.h"

/* In layer order: the attention half's taps first. */
typedef enum folo_cpu_tap {
    FOLO_CPU_TAP_QKV,       /* q/k/v_proj's input: rmsnorm(x) · input_layernorm, [T, H] */
    FOLO_CPU_TAP_O,         /* o_proj's input: attention output per head, [T, Hq·D] */
    FOLO_CPU_TAP_ATTENTION, /* the whole attention half: x += attention · Woᵀ */
    FOLO_CPU_TAP_GATE_UP,   /* gate/up_proj's input: rmsnorm(x) · post_attention_layernorm,
                               [T, H] */
    FOLO_CPU_TAP_DOWN,      /* down_proj's input: silu(h · Wgateᵀ) ⊙ h · Wupᵀ, [T, I] */
    FOLO_CPU_TAP_MLP,       /* the whole MLP half: x += mlp(x) */
} folo_cpu_tap;

/* x [T, H] = the embedding rows of batch->token_ids (T = batch->n_tokens). */
int folo_cpu_embed(folo_backend *b, const folo_batch *batch, float *x, folo_error *err);

/* Runs the half of layer `layer` that `tap` belongs to on x [T, H], the
 * tokens, positions and KV slots of `batch` (the attention half writes the
 * layer's K and V to the cache, as a forward does). At a linear's input it
 * returns that input ([T, K], the backend's scratch, valid until its next
 * call) and leaves x as it was; at the end of a half it adds the half's
 * output to x and returns x. NULL with err set when the batch is invalid
 * or the scratch cannot grow. b must be a CPU backend. */
const float *folo_cpu_layer_run(folo_backend *b, const folo_batch *batch, int layer,
                                folo_cpu_tap tap, float *x, folo_error *err);

/* lm_head's input: rmsnorm(x) · model.norm of x [T, H], the last layer's
 * output, as the forward computes it before the head; returned in the
 * backend's scratch ([T, H], valid until its next call). NULL with err set
 * as folo_cpu_layer_run. */
const float *folo_cpu_final_norm(folo_backend *b, const folo_batch *batch, const float *x,
                                 folo_error *err);

#endif
