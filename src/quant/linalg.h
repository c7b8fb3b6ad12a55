/* The dense linear algebra `folo quantize` needs, from LAPACK and BLAS:
 * Cholesky factorizations (LAPACKE's dpotrf and dpotri) and double
 * precision products (CBLAS's dsyrk and dgemm).
 *
 * The libraries are loaded with dlopen on first use, never linked, so the
 * folo binary that serves models does not carry a dependency (OpenBLAS is
 * 40 MB) it only needs to quantize. On Debian they are liblapacke.so.3 and
 * libblas.so.3, the latter whichever BLAS the alternatives system selects:
 * OpenBLAS (libopenblas0) when installed, else the reference BLAS, which is
 * correct but about 15 times slower on the products here. A missing library
 * is an error naming it and the Debian packages to install;
 * $FOLO_LAPACKE_LIBRARY and $FOLO_BLAS_LIBRARY name other files.
 *
 * The ABI is declared here rather than taken from lapacke.h and cblas.h,
 * whose Debian variants (netlib's, OpenBLAS's) spell the same interface with
 * different type names: 32-bit integers (the LP64 builds Debian ships) and
 * the enumeration values every CBLAS and LAPACKE uses. Matrices are
 * row-major throughout. Opened once per process; the table is then read
 * only, and its routines may be called from any thread. */
#ifndef FOLO_QUANT_LINALG_H
#define FOLO_QUANT_LINALG_H

#include "core/error.h"

enum {
    FOLO_CBLAS_ROW_MAJOR = 101,
    FOLO_CBLAS_NO_TRANS = 111,
    FOLO_CBLAS_TRANS = 112,
    FOLO_CBLAS_UPPER = 121,
    FOLO_LAPACK_ROW_MAJOR = 101,
};

typedef struct folo_linalg {
    /* A = L·Lᵀ (uplo 'L') or Uᵀ·U ('U') in place, the other triangle left
     * as it was; returns 0, or i > 0 when the leading minor of order i is
     * not positive definite. */
    int (*dpotrf)(int layout, char uplo, int n, double *a, int lda);
    /* From dpotrf's factor in the `uplo` triangle: that triangle of A⁻¹. */
    int (*dpotri)(int layout, char uplo, int n, double *a, int lda);
    /* C = alpha·Aᵀ·A + beta·C (trans) on C's `uplo` triangle; C [n, n],
     * A [k, n]. */
    void (*dsyrk)(int layout, int uplo, int trans, int n, int k, double alpha, const double *a,
                  int lda, double beta, double *c, int ldc);
    /* C [m, n] = alpha·op(A)·op(B) + beta·C. */
    void (*dgemm)(int layout, int trans_a, int trans_b, int m, int n, int k, double alpha,
                  const double *a, int lda, const double *b, int ldb, double beta, double *c,
                  int ldc);
    /* OpenBLAS's openblas_set_num_threads: how many threads its products
     * use from now on; NULL when the BLAS has no such call (the reference
     * BLAS runs on the caller's thread). */
    void (*set_threads)(int n);
} folo_linalg;

/* The process's table, loading the libraries on the first call; NULL (with
 * the reason) when they cannot be loaded. Thread-safe. */
const folo_linalg *folo_linalg_get(folo_error *err);

#endif
