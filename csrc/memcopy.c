/* Large copies into the store: streamed past the cache, shared with a helper thread.
 *
 * Streaming. Objects of a megabyte or more are written with non-temporal
 * stores: a plain memcpy first reads every destination line into the cache
 * (read-for-ownership) and then evicts the writer's own working set to make
 * room for bytes that another process reads later. Streaming skips both: an
 * 8 MB copy into a store block not in cache took 0.35-0.4 ms instead of
 * 0.5-0.7 ms on the project's machine, and the writer's next computation ran
 * faster. Below that, memcpy (whose data stays in cache for a reader soon).
 *
 * A helper thread. One core does not keep the memory system busy: on the
 * project's machine one core copies ~13 GB/s, two together ~19 GB/s. A
 * process that returns or puts a large array spends that time in this copy
 * with nothing else to do (an actor returning its 8 MB model cannot start its
 * next method until the copy is done), while the other core often waits for
 * it. So copies of 4 MB or more are cut into 256 KB chunks that the calling
 * thread and one helper thread of the process take from a shared counter, as
 * Ray's client spreads large copies over threads.
 *
 * Never waiting for the helper. On two busy cores the helper may not run at
 * all during a copy. The caller does not wait for it to wake: whoever runs
 * takes the next chunk, so an absent helper only means the caller copies
 * everything. The caller waits only for a chunk the helper has taken and not
 * finished (~15 us of copying), on a futex if the helper lost its core in
 * the middle of one. One copy at a time uses the helper; another thread that
 * copies meanwhile copies alone. A forked child starts a helper of its own on
 * its first large copy. */
#include "memcopy.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#define STREAM_MIN (1u << 20)
#define PARALLEL_MIN (4u << 20)
#define CHUNK (256u << 10)
#define SPIN 2000 /* pauses before the caller sleeps on a helper mid-chunk */

enum { IDLE = 0, BUSY = 1, WAITED = 2 }; /* helper states; WAITED: busy, and the caller sleeps */
enum { NOT_STARTED = 0, RUNNING = 1, UNAVAILABLE = 2 };

static struct {
    atomic_flag in_use;     /* a copy is sharing the helper */
    _Atomic int helper;     /* NOT_STARTED / RUNNING / UNAVAILABLE (changed under in_use) */
    _Atomic uint32_t gen;   /* futex the helper sleeps on: bumped per shared copy */
    _Atomic uint32_t active;/* gen of the copy in progress, 0 when none */
    _Atomic uint32_t state; /* futex the caller sleeps on: IDLE / BUSY / WAITED */
    _Atomic uint64_t next;  /* next chunk to take */
    uint8_t *dst;           /* the copy in progress (set before active) */
    const uint8_t *src;
    uint64_t n, nchunks;
    _Atomic uint64_t copies, chunks, helper_chunks;
} P = {.in_use = ATOMIC_FLAG_INIT};

static void futex_wait(_Atomic uint32_t *w, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    _mm_pause();
#endif
}

static void stream(uint8_t *d, const uint8_t *s, uint64_t n) {
#if defined(__x86_64__)
    size_t head = (size_t)(-(uintptr_t)d & 63); /* up to the next cache line */
    if (head > n) head = n;
    memcpy(d, s, head);
    d += head, s += head, n -= head;
    for (; n >= 64; d += 64, s += 64, n -= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s), b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32)), e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    _mm_sfence(); /* streaming stores are weakly ordered: all visible before the seal */
#endif
    memcpy(d, s, n);
}

/* Reading one byte per fault-around window maps the whole window: a read fault
 * on shared memory maps the 16 pages around it (the kernel's default
 * fault_around_bytes) that are already in the page cache, writable, since shared
 * memory needs no write notification, where a write fault maps one page (~1.3 us
 * each here). 100 MB of pages already in the segment map in about 4 ms, against
 * 10-17 ms for MADV_POPULATE_READ (one page-table walk per page) and ~50 ms for
 * the write faults of a copy page by page; a 1 MB copy into such pages took
 * 125 us instead of 330. A page the fault-around left out (not in the page cache
 * yet) just takes its write fault later; the reads cost nothing measurable when
 * the pages are mapped already. */
void rf_map_in(const void *p, uint64_t n) {
    if (n == 0) return;
    const volatile uint8_t *v = p;
    for (uint64_t i = 0; i < n; i += RF_FAULT_AROUND) (void)v[i];
    (void)v[n - 1];
}

/* Take and copy chunks of the copy in progress until none is left; returns how many. */
static uint64_t take_chunks(void) {
    uint64_t k, done = 0;
    while ((k = atomic_fetch_add(&P.next, 1)) < P.nchunks) {
        uint64_t off = k * CHUNK, len = P.n - off < CHUNK ? P.n - off : CHUNK;
        stream(P.dst + off, P.src + off, len);
        done++;
    }
    return done;
}

static void *helper_main(void *arg) {
    (void)arg;
    /* Only a core nobody else wants: the helper must never take one from the process
     * that the copy is for, or from the processes it waits for. */
    struct sched_param none = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = atomic_load(&P.gen);
        if (g == seen) {
            futex_wait(&P.gen, seen);
            continue;
        }
        seen = g;
        /* BUSY before looking at active, the caller clears active before looking at
         * the state: one of the two sees the other, so the fields are never read
         * after the caller has returned. */
        atomic_store(&P.state, BUSY);
        if (atomic_load(&P.active) == g) atomic_fetch_add_explicit(&P.helper_chunks, take_chunks(), memory_order_relaxed);
        if (atomic_exchange(&P.state, IDLE) == WAITED) futex_wake(&P.state);
    }
    return NULL;
}

static void forget_helper(void) { /* in a forked child: the thread stayed with the parent */
    atomic_flag_clear(&P.in_use);
    P.helper = NOT_STARTED;
    atomic_store(&P.gen, 0);
    atomic_store(&P.active, 0);
    atomic_store(&P.state, IDLE);
    atomic_store(&P.copies, 0);
    atomic_store(&P.chunks, 0);
    atomic_store(&P.helper_chunks, 0);
}

static int more_than_one_cpu(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set) > 1;
    return sysconf(_SC_NPROCESSORS_ONLN) > 1;
}

static void start_helper(void) { /* called holding in_use */
    static int atfork_done;
    P.helper = UNAVAILABLE;
    if (!more_than_one_cpu()) return;
    if (!atfork_done && pthread_atfork(NULL, NULL, forget_helper) != 0) return;
    atfork_done = 1;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64u << 10);
    /* Signals stay with the process's own threads (Python handles them on its main thread). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t t;
    if (pthread_create(&t, &attr, helper_main, NULL) == 0) P.helper = RUNNING;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

static void parallel_copy(uint8_t *d, const uint8_t *s, uint64_t n) {
    P.dst = d, P.src = s, P.n = n, P.nchunks = (n + CHUNK - 1) / CHUNK;
    atomic_store(&P.next, 0);
    uint32_t g = atomic_load(&P.gen) + 1;
    if (g == 0) g = 1; /* 0 means no copy */
    atomic_store(&P.active, g);
    atomic_store(&P.gen, g);
    futex_wake(&P.gen);
    take_chunks();
    atomic_store(&P.active, 0);
    for (int i = 0; i < SPIN && atomic_load(&P.state) != IDLE; i++) cpu_relax();
    uint32_t st;
    while ((st = atomic_load(&P.state)) != IDLE) {
        uint32_t busy = BUSY;
        if (st == WAITED || atomic_compare_exchange_strong(&P.state, &busy, WAITED)) futex_wait(&P.state, WAITED);
    }
    atomic_fetch_add_explicit(&P.copies, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&P.chunks, P.nchunks, memory_order_relaxed);
}

int rf_copy_parallel(uint64_t n) {
    if (n < PARALLEL_MIN) return 0;
    if (P.helper == NOT_STARTED && !atomic_flag_test_and_set(&P.in_use)) {
        if (P.helper == NOT_STARTED) start_helper();
        atomic_flag_clear(&P.in_use);
    }
    return P.helper == RUNNING;
}

void rf_copy(void *dst, const void *src, uint64_t n) {
    if (n >= RF_FAULT_AROUND) rf_map_in(dst, n);   /* this process may not have touched it yet */
    if (n < STREAM_MIN) {
        memcpy(dst, src, n);
        return;
    }
    if (rf_copy_parallel(n) && !atomic_flag_test_and_set(&P.in_use)) {
        parallel_copy(dst, src, n);
        atomic_flag_clear(&P.in_use);
        return;
    }
    stream(dst, src, n);
}

void rf_copy_stats_get(rf_copy_stats *out) {
    out->copies = atomic_load(&P.copies);
    out->chunks = atomic_load(&P.chunks);
    out->helper_chunks = atomic_load(&P.helper_chunks);
}

double rf_memcpy_bandwidth(uint64_t nbytes) {
    if (nbytes < 4096) nbytes = 4096;
    uint8_t *a = malloc(nbytes), *b = malloc(nbytes);
    if (!a || !b) {
        free(a);
        free(b);
        return 0.0;
    }
    memset(a, 1, nbytes);
    memset(b, 2, nbytes);
    double best = 0;
    for (int i = 0; i < 5; i++) {
        int64_t t0 = now_ns();
        memcpy(b, a, nbytes);
        int64_t t1 = now_ns();
        __asm__ volatile("" : : "r"(b) : "memory");
        double gbs = (double)nbytes / (double)(t1 - t0 > 0 ? t1 - t0 : 1);
        if (gbs > best) best = gbs;
    }
    free(a);
    free(b);
    return best;
}
