/* Leveled logging to stderr. The level is process-wide and set once by the
 * CLI (--log-level); library code logs progress and warnings, never errors
 * it also returns (those are reported once, by the caller). */
#ifndef FOLO_CORE_LOG_H
#define FOLO_CORE_LOG_H

typedef enum folo_log_level {
    FOLO_LOG_DEBUG = 0,
    FOLO_LOG_INFO,
    FOLO_LOG_WARN,
    FOLO_LOG_ERROR,
    FOLO_LOG_OFF
} folo_log_level;

void folo_log_set_level(folo_log_level level);
folo_log_level folo_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; -1 when unknown. */
int folo_log_parse_level(const char *name, folo_log_level *out);
void folo_log(folo_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A one-line progress bar on stderr, redrawn in place when stderr is a
 * terminal and printed every 10% otherwise. */
typedef struct folo_progress {
    const char *label;
    double total;      /* units of work (bytes, tensors, tokens) */
    double start_s;    /* folo_now_s() at begin */
    int last_decile;   /* for non-terminal output */
    int is_tty;
} folo_progress;

void folo_progress_begin(folo_progress *p, const char *label, double total);
void folo_progress_update(folo_progress *p, double done);
void folo_progress_end(folo_progress *p);

#endif
