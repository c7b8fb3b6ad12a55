/* The roofline of DESIGN §9 for a benchmark report: a hardware profile
 * (memory bandwidth and peak dense arithmetic) against the model's figures.
 *
 *   decode step floor   = weight bytes one decode step reads / bandwidth
 *   prefill token floor = FLOPs of one token / peak
 *   MBU                 = (weight bytes / measured decode step) / bandwidth
 *   MFU                 = (tokens computed per s x FLOPs per token) / peak
 *   seed estimate       = devices x peak x utilization / (2 x params),
 *                         tokens/s (FLOPs per token = 2 x params)
 *
 * FLOPs per token are 2 x the parameters the matmuls use (the lm_head
 * included, the embedding lookup not): attention's own FLOPs, small at the
 * lengths benchmarked here, are left out, as the seeds' formula does.
 *
 * Built-in profiles are the vendors' dense bf16 tensor figures (no
 * sparsity) and HBM bandwidths of the SXM parts; "cpu" is this machine,
 * measured when asked (src/bench/cpu_peak.h), its peak the fastest
 * arithmetic kind the CPU has. */
#ifndef FOLO_BENCH_ROOFLINE_H
#define FOLO_BENCH_ROOFLINE_H

#include <jansson.h>
#include <stdbool.h>

#include "bench/stats.h"
#include "core/error.h"
#include "model/model.h"

typedef struct folo_bench_hardware {
    char name[32];           /* "a100", "h100", "h200", "cpu" */
    char peak_kind[48];      /* what the peak counts, e.g. "bf16 dense tensor" */
    double bandwidth_gbs;    /* GB/s (1e9 bytes/s) */
    double peak_gflops;      /* GFLOP/s */
    bool measured;           /* figures measured on this machine, now */
} folo_bench_hardware;

/* The profiles of folo_bench_hardware_get, for help texts: "a100, h100, ...". */
extern const char folo_bench_hardware_names[];

/* A built-in profile by name, or "cpu": this machine, measured with
 * n_threads threads (<= 0: every core), its peak that of the instructions
 * a run with bf16 matmul inputs (--dtype bfloat16) or f32 ones uses. */
int folo_bench_hardware_get(const char *name, int n_threads, bool bf16_inputs,
                            folo_bench_hardware *out, folo_error *err);

double folo_bench_decode_floor_s(const folo_bench_hardware *hw, double decode_bytes);
double folo_bench_prefill_floor_s(const folo_bench_hardware *hw, double flops_per_token);
/* Fractions of the ceiling; 0 when the measurement is missing. */
double folo_bench_mbu(const folo_bench_hardware *hw, double decode_bytes, double step_s);
double folo_bench_mfu(const folo_bench_hardware *hw, double flops_per_token,
                      double tokens_per_s);
/* The seeds' estimate of tokens/s. */
double folo_bench_seed_estimate(const folo_bench_hardware *hw, int devices, double utilization,
                                double flops_per_token);

/* The profile of --hardware NAME (NULL: this CPU measured, or "h100" when
 * device is "cuda"), with bandwidth_gbs and peak_tflops (when > 0) over its
 * figures. */
int folo_bench_hardware_pick(const char *name, const char *device, int n_threads,
                             bool bf16_inputs, double bandwidth_gbs, double peak_tflops,
                             folo_bench_hardware *out, folo_error *err);

/* {"name", "peak_kind", "bandwidth_gbs", "peak_gflops", "measured"}. */
json_t *folo_bench_hardware_json(const folo_bench_hardware *hw);

/* What the roofline needs of a model. */
typedef struct folo_bench_model_figures {
    size_t weight_bytes;        /* all weights */
    size_t decode_bytes;        /* what a decode step reads: every weight once, but of an
                                   untied embedding table one row per token (a tied one is
                                   read whole as the lm_head) */
    size_t kv_values_per_token; /* K and V values of one token, all layers */
    double flops_per_token;     /* 2 x the parameters the matmuls use */
    double lm_head_flops;       /* of those, the lm_head's (a prefill computes it once) */
} folo_bench_model_figures;

void folo_bench_model_figures_of(const folo_model *m, folo_bench_model_figures *out);

/* A run's roofline: the hardware, the model, the devices of the estimate. */
typedef struct folo_bench_roofline {
    folo_bench_hardware hw;
    folo_bench_model_figures model;
    int devices;
} folo_bench_roofline;

double folo_bench_roofline_decode_floor_s(const folo_bench_roofline *r);
/* A prompt token's floor, its lm_head left out. */
double folo_bench_roofline_prefill_floor_s(const folo_bench_roofline *r);
/* One line on stdout: the profile, the decode and prefill floors. */
void folo_bench_roofline_print(const folo_bench_roofline *r);
/* The same figures into j: hardware, devices, bandwidth_gbs, peak_gflops,
 * decode_weight_bytes, flops_per_token, decode_floor_ms,
 * prefill_floor_ms_per_token. */
void folo_bench_roofline_header_json(const folo_bench_roofline *r, json_t *j);
/* A run's MFU from its summary's total token throughput. */
double folo_bench_roofline_mfu(const folo_bench_roofline *r, const folo_bench_summary *s);
/* One line: the MFU and the seeds' estimate at it on each built-in GPU. */
void folo_bench_roofline_print_mfu(const folo_bench_roofline *r, const char *indent,
                                   const folo_bench_summary *s);
/* "mfu" and "seed_estimate_tokens_per_s" ({gpu: tokens/s}) into o. */
void folo_bench_roofline_json(const folo_bench_roofline *r, const folo_bench_summary *s,
                              json_t *o);

#endif
