/* Unit tests for memcopy.c: every size class and alignment copies exactly its bytes,
 * copies from several threads at once, and a forked child's copies. */
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "memcopy.h"

#define GUARD 128

/* Copy n bytes between buffers misaligned by da/sa; check the bytes and the guards around them. */
static void copy_and_check(uint64_t n, unsigned da, unsigned sa) {
    uint8_t *src = malloc(n + sa + 64), *dst = malloc(n + da + 2 * GUARD);
    REQUIRE(src && dst);
    uint64_t salt = check_rand();
    for (uint64_t i = 0; i < n; i++) src[sa + i] = (uint8_t)((i * 131) ^ (i >> 9) ^ salt);
    memset(dst, 0xA5, n + da + 2 * GUARD);
    rf_copy(dst + GUARD + da, src + sa, n);
    CHECK(memcmp(dst + GUARD + da, src + sa, n) == 0);
    for (unsigned i = 0; i < GUARD + da; i++) CHECK_EQ(dst[i], 0xA5);
    for (unsigned i = 0; i < GUARD; i++) CHECK_EQ(dst[GUARD + da + n + i], 0xA5);
    free(src);
    free(dst);
}

static void test_sizes_and_alignments(void) {
    const uint64_t MB = 1u << 20, CH = 256u << 10;
    uint64_t sizes[] = {0, 1, 63, 64, 65, 4095, MB - 1, MB, MB + 1, 4 * MB - 1, 4 * MB, 4 * MB + 1,
                        4 * MB + CH - 3, 9 * MB + 13};
    unsigned aligns[][2] = {{0, 0}, {1, 0}, {0, 7}, {33, 5}, {63, 63}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (size_t j = 0; j < sizeof aligns / sizeof *aligns; j++) copy_and_check(sizes[i], aligns[j][0], aligns[j][1]);
}

static void test_parallel_copies_are_counted(void) {
    if (!rf_copy_parallel(8u << 20)) return; /* one CPU: every copy is the caller's own */
    rf_copy_stats before, after;
    rf_copy_stats_get(&before);
    copy_and_check(8u << 20, 0, 0);
    rf_copy_stats_get(&after);
    CHECK_EQ(after.copies, before.copies + 1);
    CHECK_EQ(after.chunks, before.chunks + 32);
    CHECK(after.helper_chunks <= after.chunks);
    CHECK(!rf_copy_parallel((4u << 20) - 1));
}

static void *copier(void *arg) {
    unsigned k = (unsigned)(uintptr_t)arg;
    for (int rep = 0; rep < 6; rep++) copy_and_check((5u << 20) + k * 4099 + (unsigned)rep, k, rep);
    return NULL;
}

/* Only one copy at a time shares the helper; the others copy alone, all correctly. */
static void test_threads_at_once(void) {
    pthread_t t[4];
    for (uintptr_t k = 0; k < 4; k++) REQUIRE(pthread_create(&t[k], NULL, copier, (void *)k) == 0);
    for (int k = 0; k < 4; k++) pthread_join(t[k], NULL);
}

/* The child has no helper thread of its parent's: it starts its own and its counters start at 0. */
static void test_forked_child(void) {
    copy_and_check(6u << 20, 0, 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        rf_copy_stats st;
        rf_copy_stats_get(&st);
        int ok = st.copies == 0;
        copy_and_check(6u << 20, 3, 1);
        copy_and_check(7u << 20, 0, 0);
        rf_copy_stats_get(&st);
        ok = ok && st.copies == (rf_copy_parallel(6u << 20) ? 2u : 0u) && failures == 0;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_bandwidth_reference(void) { CHECK(rf_memcpy_bandwidth(1u << 20) > 0.0); }

int main(void) {
    test_sizes_and_alignments();
    test_parallel_copies_are_counted();
    test_threads_at_once();
    test_forked_child();
    test_bandwidth_reference();
    return check_done("test_memcopy");
}
