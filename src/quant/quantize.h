/* `folo quantize`: a float Qwen3 checkpoint to the 4-bit GPTQ layout, by
 * GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers", as GPTQModel runs it) or by
 * round-to-nearest on the same groups (RTN, the baseline).
 *
 * GPTQ quantizes each linear W to minimize ‖W·X - Ŵ·X‖² over the inputs X
 * that reach it on calibration text, column by column, spreading each
 * column's rounding error over the columns not yet quantized through the
 * inverse Hessian of that objective (solver.h has the algorithm, hessian.h
 * the Hessian). Which X: the layers are processed in order, and each
 * layer's inputs are computed through the layers before it as already
 * quantized, so a layer corrects the error of the ones before it. Within a
 * layer, the reference's "true sequential" order, each step's inputs
 * computed with the linears quantized in the steps before it:
 *   1. q, k, v       one Hessian from the input norm's output;
 *   2. o             inputs: the attention output through the quantized q/k/v;
 *   3. gate, up      one Hessian from the post-attention norm's output, the
 *                    residual stream now carrying the quantized attention;
 *   4. down          inputs: silu(gate) ⊙ up through the quantized gate/up;
 * then the layer's output, through all seven quantized linears, is the
 * next layer's input.
 *
 * The hidden states of every calibration token stay in memory between
 * layers ([n_samples · seq_len, H] f32: 256 MiB for 128 windows of 512
 * tokens at H = 1024), so the model is never re-run from the start. Each
 * step runs the CPU backend's own forward code one half-layer at a time
 * (backend/cpu/cpu_backend.h), one calibration window per call, on a copy
 * of the model's weight table in which each linear, once quantized, is
 * replaced by its dequantized f32 weights: exactly the weights folo
 * computes from the written checkpoint (docs/gptq.md), so the inputs of a
 * later step are those the 4-bit model will produce.
 *
 * With lm_head_bits set, the head [V, H] is quantized last, the same way
 * (at 4 bits, or 8): its inputs are the final norm's output of the hidden
 * states through every quantized layer. It is written as lm_head.qweight
 * etc., the embedding stays float, and a tied checkpoint becomes untied
 * (GPTQModel's layout for a quantized head); an 8-bit head is declared by a
 * "dynamic" rule ("+:lm_head": {"bits": 8}), GPTQModel's per-module
 * override, which vLLM reads too.
 *
 * RTN needs no calibration; given calibration text it runs the same steps
 * to measure its errors. Each layer's progress line gives, per linear,
 * ‖W·X - Ŵ·X‖² / ‖W·X‖² on the calibration inputs it saw.
 *
 * The output is written by checkpoint.h: the float tensors copied, each
 * linear's qweight/qzeros/scales/g_idx as soon as it is quantized, config
 * last. With dump_dir set (a debugging aid that the tests use to give an
 * independent implementation the same inputs), the calibration windows and
 * the input rows of every Hessian are written there as safetensors:
 * calib_ids.safetensors ("input_ids" I32 [n_samples, seq_len]) and
 * layer.L.TAP.safetensors ("x" F32 [n_samples · seq_len, K]) for TAP in
 * qkv, o, gate_up, down, and lm_head.safetensors ("x" [n_samples ·
 * seq_len, H]) with lm_head. */
#ifndef FOLO_QUANT_QUANTIZE_H
#define FOLO_QUANT_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "quant/solver.h"

typedef struct folo_quantize_opts {
    const char *model_dir;    /* a float Qwen3 checkpoint */
    const char *out_dir;      /* created; its model files are replaced */
    folo_quant_params params; /* method, group size, sym, act-order, damp */
    int lm_head_bits;         /* 0: lm_head stays float; 4, or 8 (an int8 head): quantize it
                                 too (untying a tied one) */
    bool format_v2;           /* checkpoint_format "gptq_v2" rather than "gptq" */
    const char *calib_path;   /* calib.h; required by GPTQ, optional for RTN */
    int n_samples;            /* calibration windows */
    int seq_len;              /* tokens per window */
    uint64_t seed;            /* picks the windows */
    int n_threads;            /* <= 0: every online CPU */
    const char *dump_dir;     /* NULL, or where to dump the calibration inputs */
} folo_quantize_opts;

int folo_quantize(const folo_quantize_opts *o, folo_error *err);

#endif
