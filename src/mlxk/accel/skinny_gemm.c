/*
 * A cblas_sgemm for MLX's CPU backend that is fast where LLM decode spends its time.
 *
 * Decoding a few sequences multiplies a handful of activation rows by every weight
 * matrix: C = X @ W^T with X of 1-16 rows. OpenBLAS runs that as a general GEMM that
 * packs the weight panel on every call and reaches about half the memory bandwidth; here
 * each weight row is read once, straight from memory, and dotted with all activation rows
 * held in L1 (3 weight rows x 4 activation rows of AVX2 accumulators, two threads). Every
 * other call goes on to the real BLAS, whose cblas_sgemm the loader hands us.
 *
 * Each output element is the same dot product (same order of additions) whatever the
 * number of rows, so a sequence decodes to the same bits alone or in a batch.
 *
 * MLX resolves cblas_sgemm through the global symbol scope; mlxk.accel.decode_gemm loads
 * this library RTLD_GLOBAL before the BLAS and before mlx. It is built as an optional
 * extension: without a C compiler mlxk still works, at plain BLAS speed.
 *
 * On a shared machine the threads adapt: every 200 ms the first call to look reads how much
 * CPU other processes took (/proc/stat, less this process's own CPU time) and uses only as
 * many threads as there are CPUs left. A second thread on a CPU that another process keeps
 * busy makes every product wait at OpenMP's closing barrier until the scheduler lets that
 * thread run: slower than one thread.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <dlfcn.h>
#ifdef __x86_64__
#include <immintrin.h>
#endif

enum { RowMajor = 101, ColMajor = 102, NoTrans = 111, Trans = 112, ConjTrans = 113 };

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);

static sgemm_fn next_sgemm;
static int max_rows = 16;
static int max_threads = 2;
static long calls_fast, calls_forwarded;

/* ---- how many threads the machine has room for ---------------------------------------- */
static int adapt = 1;
static int threads_now = 2;          /* the current choice, at most max_threads */
static long long sample_at_ns;       /* when the last sample was taken (0: never) */
static long long busy_ticks_then;    /* /proc/stat: busy ticks of all CPUs, at the last sample */
static long long own_ns_then;        /* this process's CPU time, at the last sample */
static int others_milli = -1;        /* CPUs other processes used over the last window, x1000 */

enum { SAMPLE_NS = 200000000 };

static long long now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* user + nice + system + irq + softirq + steal of all CPUs, in clock ticks; -1 if unreadable */
static long long busy_ticks(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  long long v[8] = {0};
  int n = fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3],
                 &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  return n < 8 ? -1 : v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
}

static void sample(long long wall_ns) {
  const long long busy = busy_ticks(), own = now_ns(CLOCK_PROCESS_CPUTIME_ID);
  const long hz = sysconf(_SC_CLK_TCK);
  if (busy >= 0 && busy_ticks_then > 0 && wall_ns > 0 && hz > 0) {
    double others = ((double)(busy - busy_ticks_then) * 1e9 / hz - (double)(own - own_ns_then)) / wall_ns;
    if (others < 0) others = 0;
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    int room = (int)((online > 0 ? online : 1) - others + 0.5);
    if (room < 1) room = 1;
    __atomic_store_n(&others_milli, (int)(others * 1000), __ATOMIC_RELAXED);
    __atomic_store_n(&threads_now, room < max_threads ? room : max_threads, __ATOMIC_RELAXED);
  }
  busy_ticks_then = busy;
  own_ns_then = own;
}

static int pick_threads(void) {
  if (!adapt || max_threads == 1) return max_threads;
  const long long now = now_ns(CLOCK_MONOTONIC_COARSE);
  long long then = __atomic_load_n(&sample_at_ns, __ATOMIC_RELAXED);
  /* one caller takes each sample; the others keep the current choice */
  if (now - then >= SAMPLE_NS &&
      __atomic_compare_exchange_n(&sample_at_ns, &then, now, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
    sample(then ? now - then : 0);
  const int t = __atomic_load_n(&threads_now, __ATOMIC_RELAXED);
  return t < max_threads ? t : max_threads;
}

/* C = alpha * d + beta * C, without reading C when beta is 0 (it may hold garbage) */
static inline void store(float *c, float d, float alpha, float beta) {
  *c = beta == 0.f ? alpha * d : alpha * d + beta * *c;
}

static int use_avx2(void) {
#ifdef __x86_64__
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

/* C[i*cs + j*cw] = alpha * dot(S[i], W[j]) + beta * C[...] for i < s, n0 <= j < n1 */
static void dots_plain(int s, int n0, int n1, int K, const float *S, int lds,
                       const float *W, int ldw, float *C, ptrdiff_t cs, ptrdiff_t cw,
                       float alpha, float beta) {
  for (int j = n0; j < n1; j++) {
    const float *w = W + (size_t)j * ldw;
    for (int i = 0; i < s; i++) {
      const float *x = S + (size_t)i * lds;
      float acc = 0.f;
      for (int k = 0; k < K; k++) acc += x[k] * w[k];
      store(C + i * cs + j * cw, acc, alpha, beta);
    }
  }
}

/* C[i][j] = alpha * sum_k S[i][k] * B[k][j] + beta * C[i][j] for i < s, j < n */
static void rows_plain(int s, int n, int K, const float *S, int lds,
                       const float *B, int ldb, float *C, int ldc, float alpha, float beta) {
  for (int i = 0; i < s; i++)
    for (int j = 0; j < n; j++) {
      float acc = 0.f;
      for (int k = 0; k < K; k++) acc += S[(size_t)i * lds + k] * B[(size_t)k * ldb + j];
      store(C + (size_t)i * ldc + j, acc, alpha, beta);
    }
}

#ifdef __x86_64__
__attribute__((target("avx2,fma"))) static inline float hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

/* 3 weight rows x R activation rows; R is a constant once inlined, so the 3R
   accumulators stay in registers. With pf set, the pass also prefetches the 3 weight rows
   at pf: the hardware prefetcher alone leaves the FMAs waiting on memory at 8-16 rows. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
block3(const int R, int K, const float *x0, int lds, const float *w0, int ldw, float *c0,
       ptrdiff_t cs, ptrdiff_t cw, float alpha, float beta, const float *pf) {
  const int K8 = K & ~7;
  const float *w1 = w0 + ldw, *w2 = w1 + ldw;
  __m256 a[4][3];
  for (int i = 0; i < R; i++) a[i][0] = a[i][1] = a[i][2] = _mm256_setzero_ps();
  for (int k = 0; k < K8; k += 8) {
    const __m256 v0 = _mm256_loadu_ps(w0 + k), v1 = _mm256_loadu_ps(w1 + k),
                 v2 = _mm256_loadu_ps(w2 + k);
    if (pf) {
      _mm_prefetch((const char *)(pf + k), _MM_HINT_T0);
      _mm_prefetch((const char *)(pf + ldw + k), _MM_HINT_T0);
      _mm_prefetch((const char *)(pf + 2 * ldw + k), _MM_HINT_T0);
    }
    for (int i = 0; i < R; i++) {
      const __m256 x = _mm256_loadu_ps(x0 + (size_t)i * lds + k);
      a[i][0] = _mm256_fmadd_ps(x, v0, a[i][0]);
      a[i][1] = _mm256_fmadd_ps(x, v1, a[i][1]);
      a[i][2] = _mm256_fmadd_ps(x, v2, a[i][2]);
    }
  }
  for (int i = 0; i < R; i++) {
    const float *x = x0 + (size_t)i * lds;
    for (int q = 0; q < 3; q++) {
      const float *w = w0 + (size_t)q * ldw;
      float d = hsum(a[i][q]);
      for (int k = K8; k < K; k++) d += x[k] * w[k];
      store(c0 + i * cs + q * cw, d, alpha, beta);
    }
  }
}

__attribute__((target("avx2,fma")))
static void dots_avx2(int s, int n0, int n1, int K, const float *S, int lds,
                      const float *W, int ldw, float *C, ptrdiff_t cs, ptrdiff_t cw,
                      float alpha, float beta) {
  const int K8 = K & ~7;
  int j = n0;
  for (; j + 2 < n1; j += 3) {
    const float *w0 = W + (size_t)j * ldw;
    for (int i0 = 0; i0 < s; i0 += 4) {
      const float *x0 = S + (size_t)i0 * lds;
      float *c0 = C + i0 * cs + j * cw;
      /* the first pass over a block fetches the block after next (prefetches never fault) */
      const float *pf = i0 == 0 ? w0 + (size_t)6 * ldw : NULL;
      switch (s - i0) {
        case 1: block3(1, K, x0, lds, w0, ldw, c0, cs, cw, alpha, beta, pf); break;
        case 2: block3(2, K, x0, lds, w0, ldw, c0, cs, cw, alpha, beta, pf); break;
        case 3: block3(3, K, x0, lds, w0, ldw, c0, cs, cw, alpha, beta, pf); break;
        default: block3(4, K, x0, lds, w0, ldw, c0, cs, cw, alpha, beta, pf);
      }
    }
  }
  /* the last 1-2 weight rows: same additions as above, one row at a time */
  for (; j < n1; j++) {
    const float *w = W + (size_t)j * ldw;
    for (int i = 0; i < s; i++) {
      const float *x = S + (size_t)i * lds;
      __m256 acc = _mm256_setzero_ps();
      for (int k = 0; k < K8; k += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w + k), acc);
      float d = hsum(acc);
      for (int k = K8; k < K; k++) d += x[k] * w[k];
      store(C + i * cs + j * cw, d, alpha, beta);
    }
  }
}

/* 32 output columns of one row at a time, walking down B: 4 accumulators */
__attribute__((target("avx2,fma")))
static void rows_avx2(int s, int n, int K, const float *S, int lds,
                      const float *B, int ldb, float *C, int ldc, float alpha, float beta) {
  for (int i = 0; i < s; i++) {
    const float *x = S + (size_t)i * lds;
    float *c = C + (size_t)i * ldc;
    int j = 0;
    for (; j + 32 <= n; j += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb + j;
        const __m256 v = _mm256_broadcast_ss(x + k);
        a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b), a0);
        a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b + 8), a1);
        a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b + 16), a2);
        a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(b + 24), a3);
      }
      __m256 acc[4] = {a0, a1, a2, a3};
      for (int q = 0; q < 4; q++) {
        __m256 r = _mm256_mul_ps(_mm256_set1_ps(alpha), acc[q]);
        if (beta != 0.f) r = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(c + j + 8 * q), r);
        _mm256_storeu_ps(c + j + 8 * q, r);
      }
    }
    for (; j < n; j++) { /* the same additions, one column at a time */
      float acc = 0.f;
      for (int k = 0; k < K; k++) acc = __builtin_fmaf(x[k], B[(size_t)k * ldb + j], acc);
      store(c + j, acc, alpha, beta);
    }
  }
}
#endif

static void dots_range(int s, int n0, int n1, int K, const float *S, int lds, const float *W,
                       int ldw, float *C, ptrdiff_t cs, ptrdiff_t cw, float alpha, float beta) {
#ifdef __x86_64__
  if (use_avx2()) {
    dots_avx2(s, n0, n1, K, S, lds, W, ldw, C, cs, cw, alpha, beta);
    return;
  }
#endif
  dots_plain(s, n0, n1, K, S, lds, W, ldw, C, cs, cw, alpha, beta);
}

static void dots(int s, int n, int K, const float *S, int lds, const float *W, int ldw,
                 float *C, ptrdiff_t cs, ptrdiff_t cw, float alpha, float beta) {
  /* one thread for small products (attention): waking a second costs more than it saves */
  const int threads = (size_t)n * K >= 65536 ? pick_threads() : 1;
  if (threads == 1) {
    dots_range(s, 0, n, K, S, lds, W, ldw, C, cs, cw, alpha, beta);
    return;
  }
  /* Many small chunks of whole 3-row blocks, handed out as threads ask: on a busy machine a
     thread that loses its CPU for a while holds up only its current chunk, not half the
     product (the others take the rest instead of waiting at the barrier). */
  const int chunks = threads * 8;
  const int per = ((n + chunks - 1) / chunks + 2) / 3 * 3;
  const int count = (n + per - 1) / per;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int t = 0; t < count; t++) {
    const int n0 = t * per, n1 = n0 + per > n ? n : n0 + per;
    dots_range(s, n0, n1, K, S, lds, W, ldw, C, cs, cw, alpha, beta);
  }
}

/* C = S @ B for a few rows of S: single-threaded, these are attention-sized */
static void rows(int s, int n, int K, const float *S, int lds, const float *B, int ldb,
                 float *C, int ldc, float alpha, float beta) {
#ifdef __x86_64__
  if (use_avx2()) {
    rows_avx2(s, n, K, S, lds, B, ldb, C, ldc, alpha, beta);
    return;
  }
#endif
  rows_plain(s, n, K, S, lds, B, ldb, C, ldc, alpha, beta);
}

void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C,
                 int ldc) {
  if (order == ColMajor) { /* column-major C = op(A) op(B) is row-major C^T = op(B)^T op(A)^T */
    cblas_sgemm(RowMajor, tb, ta, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
    return;
  }
  /* row-major, A not transposed, B transposed: C[m][n] = dot(A row m, B row n) */
  if (order == RowMajor && ta == NoTrans && (tb == Trans || tb == ConjTrans) && M > 0 &&
      N > 0 && K >= 8 && (M <= max_rows || N <= max_rows)) {
    __atomic_add_fetch(&calls_fast, 1, __ATOMIC_RELAXED);
    if (M <= N)
      dots(M, N, K, A, lda, B, ldb, C, ldc, 1, alpha, beta);
    else
      dots(N, M, K, B, ldb, A, lda, C, 1, ldc, alpha, beta);
    return;
  }
  /* neither transposed, few rows, a small B: attention's probabilities @ values */
  if (order == RowMajor && ta == NoTrans && tb == NoTrans && M > 0 && N > 0 && K > 0 &&
      M <= max_rows && (size_t)N * K <= 65536) {
    __atomic_add_fetch(&calls_fast, 1, __ATOMIC_RELAXED);
    rows(M, N, K, A, lda, B, ldb, C, ldc, alpha, beta);
    return;
  }
  __atomic_add_fetch(&calls_forwarded, 1, __ATOMIC_RELAXED);
  if (!next_sgemm) next_sgemm = (sgemm_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
  next_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Called by mlxk.accel.decode_gemm: the BLAS to forward to, the limits (0 keeps a value), and
   whether the thread count follows the CPUs other processes leave free (else: always the most). */
void mlxk_skinny_configure(sgemm_fn next, int rows, int threads, int adapt_threads) {
  if (next) next_sgemm = next;
  if (rows > 0) max_rows = rows;
  if (threads > 0) max_threads = threads;
  threads_now = max_threads;
  adapt = adapt_threads;
}

/* The BLAS calls go on to (for the report: which library that is). */
void *mlxk_skinny_next(void) { return (void *)next_sgemm; }

/* Threads: the most, the current choice, and the CPUs others used in the last window (x1000;
   -1 before the first window). */
void mlxk_skinny_threads(int *most, int *now, int *others) {
  *most = max_threads;
  *now = adapt ? __atomic_load_n(&threads_now, __ATOMIC_RELAXED) : max_threads;
  *others = __atomic_load_n(&others_milli, __ATOMIC_RELAXED);
}

/* How many calls took the fast path and how many went on to the BLAS (for tests). */
void mlxk_skinny_counts(long *fast, long *forwarded) {
  *fast = __atomic_load_n(&calls_fast, __ATOMIC_RELAXED);
  *forwarded = __atomic_load_n(&calls_forwarded, __ATOMIC_RELAXED);
}
