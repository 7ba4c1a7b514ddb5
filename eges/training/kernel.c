/*
 * One EGES training step's loss and gradients on CPU, written out as word2vec does:
 * scores -> sigmoid -> coefficients -> row updates, with no intermediate (positions, K, D)
 * tensors. Compiled and loaded by eges/training/fused.py, which documents the contract and
 * falls back to the PyTorch form (eges/training/loss.py) where no C compiler is found.
 *
 * For every walk position n = b * L + i with item v = items[n] != 0:
 *   H_n = sum over sources s of w_s * source_s, the sources being the item's own row W0[v]
 *         (unless dropped) and, per side-information field with values, the mean of the
 *         field's value rows; w = softmax of A[v] over the present sources (EGES) or equal
 *         weights (A == NULL, GES; no field: BGE).
 *   loss += -log sigmoid(H_n . Z[u] + offset) for every context u at 1..window positions
 *           from i (padding excluded), and pp_n * sum_k -log sigmoid(-(H_n . Z[neg_nk] + offset))
 *           where pp_n is the number of such contexts (K negatives per position, shared by its
 *           pairs).
 * The gradients of loss / P (P = sum of pp_n, the pairs) are added to the gradient tables.
 *
 * Three phases: pair counts; per walk (in parallel) H, scores, coefficients, the gradient of
 * H and, summed within the walk, that of each position as a context; then the additions to the
 * gradient tables, bucketed once by the thread that owns their row and added in parallel by
 * owner (each row is added to by one thread, in position order), so that the result does not
 * depend on the number of threads and no two threads write one row.
 *
 * Rows are read at their index in the tables and written at their index in the gradient
 * tables, or at a compact index given per occurrence (sparse gradients: one gradient row per
 * distinct row of the batch).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int64_t n_walks, length, dim, window, negatives, fields, threads;
    const int64_t *items;     /* (N,) N = n_walks * length, 0 = padding */
    const int64_t *neg;       /* (N, K) */
    const uint8_t *drop;      /* (N,) leave out W0 where a field has a value; or NULL */
    float offset;
    const float *w0;          /* (V + 1, D) */
    const float *z;           /* (V + 1, D) */
    const float *att;         /* (V + 1, fields + 1) or NULL */
    const int64_t *const *side_off; /* per field (V + 2,) CSR offsets */
    const int64_t *const *side_val; /* per field (nnz,) value indices */
    const float *const *side_w;     /* per field (values + 1, D) */
    /* gradient tables and their write rows (NULL: the row's own index) */
    float *g_w0, *g_z, *g_att;
    float *const *g_side;
    const int64_t *item_row;  /* (N,) rows of g_w0 and g_att */
    const int64_t *ctx_row;   /* (N,) rows of g_z for the positions as contexts */
    const int64_t *neg_row;   /* (N, K) rows of g_z for the negatives */
    const int64_t *const *bag_start; /* per field (N,) start of position n's values in side_row */
    const int64_t *const *side_row;  /* per field (M,) rows of g_side */
    /* workspaces */
    float *h, *g_h;           /* (N, D) */
    float *weights, *g_logit; /* (N, fields + 1) */
    float *g_ctx;             /* (N, D) gradient of Z at each position as a context */
    float *g_neg;             /* (N, K) */
    int64_t *pp;              /* (N,) */
    double *loss_at;          /* (N,) each position's terms, summed in order at the end */
} eges_step_t;

static inline float dot(const float *a, const float *b, int64_t d) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < d; k++) s += a[k] * b[k];
    return s;
}

static inline void axpy(float a, const float *x, float *y, int64_t d) {
#pragma omp simd
    for (int64_t k = 0; k < d; k++) y[k] += a * x[k];
}

/* sigmoid(x), and log(1 + exp(sign * x)) into *softplus (sign +1 or -1): -log sigmoid(-x) or
 * -log sigmoid(x); one exponential, stable for large |x| */
static inline float sigmoid_softplus(float x, float sign, float *softplus) {
    const float e = expf(-fabsf(x)), y = sign * x;
    *softplus = (y > 0.f ? y : 0.f) + log1pf(e);
    return x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

/* Thread t adds to blocks of 32 rows of its own: every row has one writer, and a thread's rows
 * lie together (fewer pages and cache lines shared between the threads than row % T). */
static inline int64_t owner(int64_t row, int64_t threads) { return (row >> 5) % threads; }

/* The sources of position n: their weights into s->weights[n], the field means into src
 * (rows 1..fields; row 0 is W0[v]), the mask of present sources into present. */
static void sources(const eges_step_t *s, int64_t n, float *src, uint8_t *present) {
    const int64_t d = s->dim, nf = s->fields, ns = nf + 1, v = s->items[n];
    float *w = s->weights + n * ns;
    int any = 0;
    for (int64_t f = 0; f < nf; f++) {
        const int64_t lo = s->side_off[f][v], hi = s->side_off[f][v + 1];
        float *mean = src + (f + 1) * d;
        memset(mean, 0, d * sizeof(float));
        present[f + 1] = hi > lo;
        if (hi > lo) {
            any = 1;
            for (int64_t m = lo; m < hi; m++) axpy(1.f, s->side_w[f] + s->side_val[f][m] * d, mean, d);
            const float inv = 1.f / (float)(hi - lo);
            for (int64_t k = 0; k < d; k++) mean[k] *= inv;
        }
    }
    memcpy(src, s->w0 + v * d, d * sizeof(float));
    present[0] = !(s->drop && s->drop[n] && any);
    float top = -INFINITY;
    for (int64_t j = 0; j < ns; j++) {
        w[j] = s->att ? s->att[v * ns + j] : 0.f;
        if (present[j] && w[j] > top) top = w[j];
    }
    float total = 0.f;
    for (int64_t j = 0; j < ns; j++) {
        w[j] = present[j] ? expf(w[j] - top) : 0.f;
        total += w[j];
    }
    for (int64_t j = 0; j < ns; j++) w[j] /= total;
}

/* The additions of position n to the gradient tables, one "slot" each, in the order they are
 * made: 0 its row of g_z as a context of its walk, 1..K its negatives' rows of g_z, K + 1 its
 * row of g_w0 and g_att, then one per side-information value, field by field. */
static int64_t slots(const eges_step_t *s, int64_t n) {
    const int64_t v = s->items[n];
    if (!v || !s->pp[n]) return 0;
    int64_t c = s->negatives + 2;
    for (int64_t f = 0; f < s->fields; f++) c += s->side_off[f][v + 1] - s->side_off[f][v];
    return c;
}

/* The gradient row slot q of position n adds to; the field of a side value into *field. */
static int64_t slot_row(const eges_step_t *s, int64_t n, int64_t q, int64_t *field) {
    const int64_t v = s->items[n], K = s->negatives;
    *field = -1;
    if (q == 0) return s->ctx_row ? s->ctx_row[n] : v;
    if (q <= K) return s->neg_row ? s->neg_row[n * K + q - 1] : s->neg[n * K + q - 1];
    if (q == K + 1) return s->item_row ? s->item_row[n] : v;
    int64_t m = q - K - 2;
    for (int64_t f = 0; f < s->fields; f++) {
        const int64_t lo = s->side_off[f][v], count = s->side_off[f][v + 1] - lo;
        if (m < count) {
            *field = f;
            return s->side_row ? s->side_row[f][s->bag_start[f][n] + m] : s->side_val[f][lo + m];
        }
        m -= count;
    }
    return -1; /* not reached: q < slots(s, n) */
}

static void add_slot(const eges_step_t *s, int64_t n, int64_t q) {
    const int64_t d = s->dim, ns = s->fields + 1, K = s->negatives, v = s->items[n];
    const float *wt = s->weights + n * ns;
    int64_t f;
    const int64_t r = slot_row(s, n, q, &f);
    if (q == 0) {
        axpy(1.f, s->g_ctx + n * d, s->g_z + r * d, d);
    } else if (q <= K) {
        axpy(s->g_neg[n * K + q - 1], s->h + n * d, s->g_z + r * d, d);
    } else if (q == K + 1) {
        if (wt[0] > 0.f) axpy(wt[0], s->g_h + n * d, s->g_w0 + r * d, d);
        if (s->att)
            for (int64_t j = 0; j < ns; j++) s->g_att[r * ns + j] += s->g_logit[n * ns + j];
    } else {
        const int64_t bag = s->side_off[f][v + 1] - s->side_off[f][v];
        axpy(wt[f + 1] / (float)bag, s->g_h + n * d, s->g_side[f] + r * d, d);
    }
}

/* Phase 3: every addition to the gradient tables, by row owner. The additions are bucketed
 * once by owner (a counting sort over T chunks of positions, which keeps position order within
 * each bucket), then each owner's bucket is added in order by one thread: every row receives
 * its additions in position order from one writer whatever the number of threads, and no
 * thread scans the others' additions. Returns 0 where memory runs out. */
static int scatter(const eges_step_t *s, int64_t N) {
    const int64_t T = s->threads > 0 ? s->threads : 1;
    if (T == 1) { /* one bucket: the additions in position order */
        for (int64_t n = 0; n < N; n++)
            for (int64_t q = 0, m = slots(s, n); q < m; q++) add_slot(s, n, q);
        return 1;
    }
    int64_t *count = calloc((size_t)(T * T), sizeof(int64_t)); /* [chunk * T + owner] */
    int64_t *first = malloc((size_t)(T + 1) * sizeof(int64_t)); /* bucket o: first[o].. */
    int64_t *ent_n = NULL;
    int32_t *ent_q = NULL;
    int ok = count && first;
#pragma omp parallel num_threads((int)T) if (ok)
    {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < T; c++) {
            if (!ok) continue;
            int64_t f;
            for (int64_t n = c * N / T; n < (c + 1) * N / T; n++)
                for (int64_t q = 0, m = slots(s, n); q < m; q++)
                    count[c * T + owner(slot_row(s, n, q, &f), T)]++;
        }
#pragma omp single
        if (ok) {
            int64_t at = 0;
            for (int64_t o = 0; o < T; o++) {
                first[o] = at;
                for (int64_t c = 0; c < T; c++) {
                    const int64_t k = count[c * T + o];
                    count[c * T + o] = at; /* from here on: where chunk c's entries go */
                    at += k;
                }
            }
            first[T] = at;
            ent_n = malloc((size_t)(at > 0 ? at : 1) * sizeof(int64_t));
            ent_q = malloc((size_t)(at > 0 ? at : 1) * sizeof(int32_t));
            ok = ent_n && ent_q;
        }
#pragma omp for schedule(static)
        for (int64_t c = 0; c < T; c++) {
            if (!ok) continue;
            int64_t f;
            for (int64_t n = c * N / T; n < (c + 1) * N / T; n++)
                for (int64_t q = 0, m = slots(s, n); q < m; q++) {
                    const int64_t at = count[c * T + owner(slot_row(s, n, q, &f), T)]++;
                    ent_n[at] = n;
                    ent_q[at] = (int32_t)q;
                }
        }
#pragma omp for schedule(static)
        for (int64_t o = 0; o < T; o++) {
            if (!ok) continue;
            for (int64_t e = first[o]; e < first[o + 1]; e++) add_slot(s, ent_n[e], ent_q[e]);
        }
    }
    free(count);
    free(first);
    free(ent_n);
    free(ent_q);
    return ok;
}

/* Loss of the batch (summed over pairs, not divided by P); pairs into *pairs_out.
 * With grad == 0 only the loss is computed. */
double eges_step(eges_step_t *s, int grad, int64_t *pairs_out) {
    const int64_t L = s->length, N = s->n_walks * L, d = s->dim, w = s->window, K = s->negatives;
    const int64_t ns = s->fields + 1;
#ifdef _OPENMP
    const int threads = s->threads > 0 ? (int)s->threads : 1;
#endif
    int64_t pairs = 0;
    double loss = 0.0;
    int failed = 0;

    for (int64_t n = 0; n < N; n++) {
        int64_t c = 0;
        if (s->items[n]) {
            const int64_t b = n / L, i = n % L;
            const int64_t lo = i - w < 0 ? 0 : i - w, hi = i + w >= L ? L - 1 : i + w;
            for (int64_t j = lo; j <= hi; j++) c += j != i && s->items[b * L + j] != 0;
        }
        s->pp[n] = c;
        pairs += c;
    }
    *pairs_out = pairs;
    const float scale = 1.f / (float)(pairs > 0 ? pairs : 1);

#pragma omp parallel num_threads(threads)
    {
        float *src = malloc((size_t)(ns * d) * sizeof(float));
        uint8_t *present = malloc((size_t)ns);
        if (!src || !present) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < s->n_walks; b++) { /* a walk at a time: its contexts' gradients */
            if (!src || !present) continue;
            if (grad) memset(s->g_ctx + b * L * d, 0, (size_t)(L * d) * sizeof(float));
            for (int64_t i = 0; i < L; i++) {
                const int64_t n = b * L + i, v = s->items[n];
                float *gh = s->g_h + n * d, *h = s->h + n * d;
                double loss_n = 0.0;
                if (grad) memset(gh, 0, d * sizeof(float));
                s->loss_at[n] = 0.0;
                if (!v || !s->pp[n]) continue;
                sources(s, n, src, present);
                const float *wt = s->weights + n * ns;
                memset(h, 0, d * sizeof(float));
                for (int64_t j = 0; j < ns; j++)
                    if (present[j]) axpy(wt[j], src + j * d, h, d);
                const int64_t lo = i - w < 0 ? 0 : i - w, hi = i + w >= L ? L - 1 : i + w;
                for (int64_t j = lo; j <= hi; j++) { /* the contexts */
                    if (j == i || !s->items[b * L + j]) continue;
                    const float *zu = s->z + s->items[b * L + j] * d;
                    const float x = dot(h, zu, d) + s->offset;
                    float nls;
                    const float sg = sigmoid_softplus(x, -1.f, &nls);
                    loss_n += nls;
                    if (grad) {
                        const float g = (sg - 1.f) * scale;
                        axpy(g, zu, gh, d);
                        axpy(g, h, s->g_ctx + (b * L + j) * d, d);
                    }
                }
                const float weight = (float)s->pp[n];
                for (int64_t k = 0; k < K; k++) {
                    const float *zu = s->z + s->neg[n * K + k] * d;
                    const float x = dot(h, zu, d) + s->offset;
                    float nls;
                    const float sg = sigmoid_softplus(x, 1.f, &nls);
                    loss_n += weight * nls;
                    if (grad) {
                        s->g_neg[n * K + k] = sg * weight * scale;
                        axpy(s->g_neg[n * K + k], zu, gh, d);
                    }
                }
                s->loss_at[n] = loss_n;
                if (grad && s->att) { /* softmax backward: w_j (dL/dw_j - sum_t w_t dL/dw_t) */
                    float *ga = s->g_logit + n * ns, mean = 0.f;
                    for (int64_t j = 0; j < ns; j++) {
                        ga[j] = present[j] ? dot(gh, src + j * d, d) : 0.f;
                        mean += wt[j] * ga[j];
                    }
                    for (int64_t j = 0; j < ns; j++)
                        ga[j] = present[j] ? wt[j] * (ga[j] - mean) : 0.f;
                }
            }
        }
        free(src);
        free(present);
    }
    for (int64_t n = 0; n < N; n++) loss += s->loss_at[n]; /* the same order on any threads */
    if (failed || (grad && !scatter(s, N))) *pairs_out = -1; /* out of memory: the caller raises */
    return loss;
}

#define PREFETCH 4 /* rows ahead */

/* Lazy Adam on the distinct rows idx (U,) of a table p (rows, d) with their gradient rows
 * grad (U, d), moments m and v updated in place, as eges/training/optim.py's RowAdam:
 * m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2; p -= step_size m / (sqrt(v) + eps).
 * One pass over each row (no gathered copies); rows are distinct, so threads never share one. */
void eges_row_adam(int64_t U, int64_t d, const int64_t *idx, const float *grad, float *p, float *m,
                   float *v, double beta1, double beta2, float step_size, float eps,
                   int64_t threads) {
    /* 1 - beta from the doubles, as PyTorch's Adam: 1 - (float)0.999 is 1.3e-5 off 0.001 */
    const float b1 = (float)beta1, b2 = (float)beta2;
    const float c1 = (float)(1.0 - beta1), c2 = (float)(1.0 - beta2);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads > 0 ? (int)threads : 1) schedule(static)
#endif
    for (int64_t u = 0; u < U; u++) {
        const int64_t r = idx[u];
        const float *g = grad + u * d;
        if (u + PREFETCH < U) { /* rows far apart in large tables: ask for later ones early */
            const int64_t q = idx[u + PREFETCH] * d;
            for (int64_t k = 0; k < d; k += 16) {
                __builtin_prefetch(p + q + k, 1);
                __builtin_prefetch(m + q + k, 1);
                __builtin_prefetch(v + q + k, 1);
            }
        }
        float *pr = p + r * d, *mr = m + r * d, *vr = v + r * d;
#pragma omp simd
        for (int64_t k = 0; k < d; k++) {
            const float mk = mr[k] * b1 + g[k] * c1;
            const float vk = vr[k] * b2 + g[k] * g[k] * c2;
            mr[k] = mk;
            vr[k] = vk;
            pr[k] -= step_size * mk / (sqrtf(vk) + eps);
        }
    }
}

/* Whether this build runs threads (OpenMP): a build without them is one thread whatever
 * s->threads says. */
int eges_threaded(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* The struct's size, so that the caller can check its layout matches this build's. */
int64_t eges_step_size(void) { return (int64_t)sizeof(eges_step_t); }
