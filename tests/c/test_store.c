/* Unit tests of the shared-memory object store (csrc/store.c). */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static char g_name[64];

static void make_oid(uint8_t *oid, uint64_t a, uint64_t b) {
    memset(oid, 0, RF_OID_SIZE);
    memcpy(oid, &a, 8);
    memcpy(oid + 8, &b, 8);
    oid[19] = 0x5a;
}

static rf_store *new_store(const char *tag, uint64_t cap, const char *spill, const char *fallback,
                           uint64_t max_objects) {
    snprintf(g_name, sizeof g_name, "/rayfast-test-%s-%d", tag, (int)getpid());
    shm_unlink(g_name);
    rf_store *s = NULL;
    int r = rf_store_create_ex(g_name, cap, spill, fallback, max_objects, &s);
    if (r) fprintf(stderr, "create %s: %d %s errno=%d\n", g_name, r, rf_store_strerror(r), errno);
    REQUIRE(r == 0 && s);
    return s;
}

static void drop_store(rf_store *s) {
    rf_store_unlink(s);
    rf_store_close(s);
}

static int put(rf_store *s, const uint8_t *oid, uint64_t n, uint8_t fill) {
    uint32_t idx;
    uint8_t *p;
    int r = rf_store_create_object(s, oid, n, 0, &idx, &p);
    if (r) return r;
    CHECK_EQ((uintptr_t)p % RF_STORE_ALIGN, 0);
    memset(p, fill, n);
    return rf_store_seal(s, oid);
}

static int verify(rf_store *s, const uint8_t *oid, uint64_t n, uint8_t fill) {
    uint32_t idx;
    const uint8_t *p;
    uint64_t sz;
    int r = rf_store_get(s, oid, 0, &idx, &p, &sz, NULL);
    if (r) return r;
    int ok = sz == n;
    for (uint64_t i = 0; ok && i < n; i++) ok = p[i] == fill;
    rf_store_unpin(s, idx);
    return ok ? 0 : -1000;
}

static rf_store_stats stats(rf_store *s) {
    rf_store_stats st;
    REQUIRE(rf_store_stats_get(s, &st) == 0);
    return st;
}

/* ---------------------------------------------------------------- tests */

static void test_basic(void) {
    rf_store *s = new_store("basic", 1 << 20, NULL, NULL, 0);
    uint8_t a[RF_OID_SIZE], b[RF_OID_SIZE];
    make_oid(a, 1, 1);
    make_oid(b, 2, 2);
    CHECK_EQ(put(s, a, 1000, 7), 0);
    CHECK_EQ(put(s, a, 10, 7), RF_STORE_EXISTS);
    CHECK_EQ(verify(s, a, 1000, 7), 0);
    CHECK_EQ(rf_store_contains(s, a), 1);
    CHECK_EQ(rf_store_contains(s, b), 0);
    uint64_t sz;
    CHECK_EQ(rf_store_size_of(s, a, &sz), 0);
    CHECK_EQ(sz, 1000);
    uint32_t idx;
    const uint8_t *p;
    CHECK_EQ(rf_store_get(s, b, 0, &idx, &p, &sz, NULL), RF_STORE_NOTFOUND);
    /* unsealed: get times out */
    uint8_t *w;
    CHECK_EQ(rf_store_create_object(s, b, 64, 0, &idx, &w), 0);
    CHECK_EQ(rf_store_contains(s, b), 0);
    CHECK_EQ(rf_store_get(s, b, 0, &idx, &p, &sz, NULL), RF_STORE_TIMEOUT);
    CHECK_EQ(rf_store_get(s, b, 20 * 1000 * 1000, &idx, &p, &sz, NULL), RF_STORE_TIMEOUT);
    CHECK_EQ(rf_store_abort(s, b), 0);
    CHECK_EQ(rf_store_contains(s, b), 0);
    CHECK_EQ(rf_store_get(s, b, 0, &idx, &p, &sz, NULL), RF_STORE_NOTFOUND);
    /* pin keeps it across release */
    CHECK_EQ(rf_store_get(s, a, 0, &idx, &p, &sz, NULL), 0);
    CHECK_EQ(rf_store_release(s, a), 0);
    CHECK_EQ(stats(s).num_objects, 1);
    CHECK_EQ(p[999], 7);
    CHECK_EQ(rf_store_unpin(s, idx), 0);
    CHECK_EQ(stats(s).num_objects, 0);
    CHECK_EQ(stats(s).bytes_used, 0);
    /* too big */
    CHECK_EQ(rf_store_create_object(s, a, 2 << 20, 0, &idx, &w), RF_STORE_FULL);
    CHECK_EQ(rf_store_create_object(s, a, rf_store_max_object_size(s) + 1, 0, &idx, &w), RF_STORE_FULL);
    CHECK_EQ(rf_store_create_object(s, a, rf_store_max_object_size(s), 0, &idx, &w), 0);
    CHECK_EQ(rf_store_seal(s, a), 0);
    CHECK_EQ(rf_store_seal(s, a), RF_STORE_ESTATE);
    CHECK_EQ(rf_store_delete(s, a), 0);
    CHECK_EQ(rf_store_check(s), 0);
    CHECK_EQ(stats(s).largest_free_block, rf_store_max_object_size(s));
    drop_store(s);
}

static void test_allocator_random(void) {
    const uint64_t cap = 8 << 20;
    const int N = 512;
    rf_store *s = new_store("alloc", cap, NULL, NULL, 4096);
    uint8_t oid[RF_OID_SIZE];
    uint64_t sizes[512] = {0};
    int live[512] = {0};
    uint64_t offs[512];
    int fulls = 0;
    for (int step = 0; step < 20000; step++) {
        int i = (int)(check_rand() % N);
        make_oid(oid, (uint64_t)i, 77);
        if (live[i]) {
            CHECK_EQ(verify(s, oid, sizes[i], (uint8_t)i), 0);
            CHECK_EQ((check_rand() & 1) ? rf_store_release(s, oid) : rf_store_delete(s, oid), 0);
            live[i] = 0;
        } else {
            uint64_t n = (check_rand() & 3) == 0 ? check_rand() % (256 << 10) : check_rand() % 4096;
            int r = put(s, oid, n, (uint8_t)i);
            if (r == RF_STORE_FULL) {
                fulls++;
                continue;
            }
            CHECK_EQ(r, 0);
            sizes[i] = n;
            live[i] = 1;
        }
        if (step % 500 == 0) {
            CHECK_EQ(rf_store_check(s), 0);
            /* live objects never overlap */
            uint64_t alloc[512];
            for (int k = 0; k < N; k++) {
                if (!live[k]) continue;
                make_oid(oid, (uint64_t)k, 77);
                REQUIRE(rf_store_debug_offset(s, oid, &offs[k], &alloc[k]) == 0);
                CHECK_EQ(offs[k] % RF_STORE_ALIGN, 0);
                CHECK(alloc[k] >= sizes[k] + RF_STORE_BLOCK_OVERHEAD);
            }
            for (int k = 0; k < N; k++)
                for (int m = k + 1; m < N; m++)
                    if (live[k] && live[m])
                        CHECK(offs[k] + alloc[k] - RF_STORE_BLOCK_OVERHEAD <= offs[m] - RF_STORE_BLOCK_OVERHEAD ||
                              offs[m] + alloc[m] - RF_STORE_BLOCK_OVERHEAD <= offs[k] - RF_STORE_BLOCK_OVERHEAD);
            rf_store_stats st = stats(s);
            CHECK_EQ(st.bytes_used + st.bytes_free, cap);
        }
    }
    CHECK(fulls > 0); /* the store did fill up */
    for (int i = 0; i < N; i++)
        if (live[i]) {
            make_oid(oid, (uint64_t)i, 77);
            CHECK_EQ(rf_store_release(s, oid), 0);
        }
    rf_store_stats st = stats(s);
    CHECK_EQ(st.bytes_used, 0);
    CHECK_EQ(st.num_objects, 0);
    CHECK_EQ(st.largest_free_block, cap - RF_STORE_BLOCK_OVERHEAD); /* fully coalesced */
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
}

static void test_full_free_reuse_and_coalesce(void) {
    const uint64_t cap = 1 << 20;
    rf_store *s = new_store("full", cap, NULL, NULL, 0);
    uint8_t oid[RF_OID_SIZE];
    int n = 0;
    for (;; n++) {
        make_oid(oid, (uint64_t)n, 1);
        int r = put(s, oid, 4000, 1);
        if (r == RF_STORE_FULL) break;
        REQUIRE(r == 0);
    }
    CHECK(n > 200);
    rf_store_stats st = stats(s);
    CHECK(st.bytes_free < 4096 + 64);
    /* free every other one: no block big enough for 2 objects */
    for (int i = 0; i < n; i += 2) {
        make_oid(oid, (uint64_t)i, 1);
        CHECK_EQ(rf_store_release(s, oid), 0);
    }
    CHECK_EQ(rf_store_check(s), 0);
    make_oid(oid, 99999, 1);
    CHECK_EQ(put(s, oid, 9000, 1), RF_STORE_FULL);
    CHECK_EQ(put(s, oid, 4000, 1), 0); /* reuses a hole */
    CHECK_EQ(rf_store_release(s, oid), 0);
    /* free the rest: neighbours coalesce into one block */
    for (int i = 1; i < n; i += 2) {
        make_oid(oid, (uint64_t)i, 1);
        CHECK_EQ(rf_store_release(s, oid), 0);
    }
    st = stats(s);
    CHECK_EQ(st.bytes_used, 0);
    CHECK_EQ(st.largest_free_block, cap - 64);
    make_oid(oid, 123456, 1);
    CHECK_EQ(put(s, oid, cap - 64, 3), 0);
    CHECK_EQ(verify(s, oid, cap - 64, 3), 0);
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
}

static void test_many_objects(void) {
    const int N = 20000;
    rf_store *s = new_store("many", 64 << 20, NULL, NULL, N);
    uint8_t oid[RF_OID_SIZE];
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i * 2654435761u, (uint64_t)i);
        REQUIRE(put(s, oid, (uint64_t)(i % 100), (uint8_t)i) == 0);
    }
    make_oid(oid, 1, 999999);
    uint32_t idx;
    uint8_t *w;
    CHECK_EQ(rf_store_create_object(s, oid, 8, 0, &idx, &w), RF_STORE_TABLE_FULL);
    CHECK_EQ(stats(s).num_objects, N);
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i * 2654435761u, (uint64_t)i);
        CHECK_EQ(verify(s, oid, (uint64_t)(i % 100), (uint8_t)i), 0);
    }
    for (int i = 0; i < N; i += 2) {
        make_oid(oid, (uint64_t)i * 2654435761u, (uint64_t)i);
        CHECK_EQ(rf_store_delete(s, oid), 0);
    }
    CHECK_EQ(rf_store_check(s), 0);
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i * 2654435761u, (uint64_t)i);
        CHECK_EQ(rf_store_contains(s, oid), i % 2);
    }
    uint64_t total = 0;
    uint8_t *buf = malloc((size_t)N * RF_OID_SIZE);
    CHECK_EQ(rf_store_list(s, 0, buf, N, &total), N / 2);
    CHECK_EQ(total, N / 2);
    /* written_by: this process wrote them all and holds their creation references */
    CHECK_EQ(rf_store_list(s, (int32_t)getpid(), NULL, 0, &total), 0);
    CHECK_EQ(total, N / 2);
    CHECK_EQ(rf_store_list(s, (int32_t)getpid() + 1, NULL, 0, &total), 0);
    CHECK_EQ(total, 0);
    /* one released while a reader still pins it: still sealed, no longer the writer's to give back */
    make_oid(oid, 1ull * 2654435761u, 1);
    const uint8_t *p;
    uint64_t sz;
    REQUIRE(rf_store_get(s, oid, 0, &idx, &p, &sz, NULL) == 0);
    CHECK_EQ(rf_store_release(s, oid), 0);
    CHECK_EQ(rf_store_list(s, 0, NULL, 0, &total), 0);
    CHECK_EQ(total, N / 2);
    CHECK_EQ(rf_store_list(s, (int32_t)getpid(), NULL, 0, &total), 0);
    CHECK_EQ(total, N / 2 - 1);
    CHECK_EQ(rf_store_unpin(s, idx), 0);
    free(buf);
    drop_store(s);
}

static void test_spill(void) {
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/rayfast-test-spill-%d", (int)getpid());
    const uint64_t cap = 4 << 20;
    rf_store *s = new_store("spill", cap, dir, NULL, 0);
    uint8_t oid[RF_OID_SIZE];
    const int N = 10;
    const uint64_t n = 1 << 20; /* 10 MiB of live objects in 4 MiB */
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i, 5);
        CHECK_EQ(put(s, oid, n, (uint8_t)(i + 1)), 0);
    }
    rf_store_stats st = stats(s);
    CHECK(st.spills >= 7);
    CHECK(st.num_spilled >= 7);
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            make_oid(oid, (uint64_t)i, 5);
            CHECK_EQ(rf_store_contains(s, oid), 1);
            CHECK_EQ(verify(s, oid, n, (uint8_t)(i + 1)), 0);
        }
    st = stats(s);
    CHECK(st.restores >= 7);
    CHECK_EQ(rf_store_check(s), 0);
    /* a pinned object is never spilled: pin 3, then the 4th create must fail */
    uint32_t idx[4];
    const uint8_t *p;
    uint64_t sz;
    for (int i = 0; i < 3; i++) {
        make_oid(oid, (uint64_t)i, 5);
        CHECK_EQ(rf_store_get(s, oid, 0, &idx[i], &p, &sz, NULL), 0);
    }
    make_oid(oid, 100, 5);
    CHECK_EQ(put(s, oid, n, 1), RF_STORE_FULL);
    for (int i = 0; i < 3; i++) rf_store_unpin(s, idx[i]);
    CHECK_EQ(put(s, oid, n, 1), 0);
    /* releasing everything deletes the spill files */
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i, 5);
        CHECK_EQ(rf_store_release(s, oid), 0);
    }
    make_oid(oid, 100, 5);
    CHECK_EQ(rf_store_release(s, oid), 0);
    int files = 0;
    DIR *d = opendir(dir);
    REQUIRE(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') files++;
    closedir(d);
    CHECK_EQ(files, 0);
    CHECK_EQ(stats(s).bytes_used, 0);
    drop_store(s);
    rmdir(dir);
}

/* Several processes create, seal and read (their own and each other's) at once. */
static void test_multiprocess(void) {
    rf_store *s = new_store("mp", 32 << 20, NULL, NULL, 0);
    const int P = 4, N = 3000;
    pid_t pids[8];
    for (int p = 0; p < P; p++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            rf_store *c = NULL;
            if (rf_store_attach(g_name, &c) != 0) _exit(2);
            check_rng_state ^= (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
            uint8_t oid[RF_OID_SIZE];
            int bad = 0;
            for (int i = 0; i < N; i++) {
                make_oid(oid, (uint64_t)p, (uint64_t)i);
                uint64_t n = 1 + check_rand() % 20000;
                if (put(c, oid, n, (uint8_t)(p * 31 + i)) != 0) bad++;
                /* read a sibling's object (waits until it is sealed) */
                uint8_t other[RF_OID_SIZE];
                make_oid(other, (uint64_t)((p + 1) % P), (uint64_t)i);
                uint32_t idx;
                const uint8_t *ptr;
                uint64_t sz;
                int r = rf_store_get(c, other, 5ll * 1000 * 1000 * 1000, &idx, &ptr, &sz, NULL);
                if (r == 0) {
                    for (uint64_t k = 0; k < sz; k++)
                        if (ptr[k] != (uint8_t)(((p + 1) % P) * 31 + i)) {
                            bad++;
                            break;
                        }
                    rf_store_unpin(c, idx);
                } else if (r != RF_STORE_NOTFOUND) {
                    bad++;
                }
                if (i >= 20) { /* keep the store bounded */
                    make_oid(oid, (uint64_t)p, (uint64_t)(i - 20));
                    if (rf_store_release(c, oid) != 0) bad++;
                }
            }
            rf_store_close(c);
            _exit(bad ? 1 : 0);
        }
        pids[p] = pid;
    }
    for (int p = 0; p < P; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_EQ(rf_store_check(s), 0);
    CHECK_EQ(stats(s).num_objects, P * 20);
    drop_store(s);
}

/* A get() in one process wakes up when another process seals. */
static void test_wait_seal(void) {
    rf_store *s = new_store("wait", 1 << 20, NULL, NULL, 0);
    uint8_t oid[RF_OID_SIZE];
    make_oid(oid, 42, 42);
    uint32_t idx;
    uint8_t *w;
    REQUIRE(rf_store_create_object(s, oid, 100, 0, &idx, &w) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100 * 1000);
        memset(w, 9, 100);
        _exit(rf_store_seal(s, oid) == 0 ? 0 : 1);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const uint8_t *p;
    uint64_t sz;
    CHECK_EQ(rf_store_get(s, oid, 5ll * 1000 * 1000 * 1000, &idx, &p, &sz, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(dt > 0.05 && dt < 2.0);
    CHECK_EQ(p[99], 9);
    rf_store_unpin(s, idx);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    drop_store(s);
}

/* A child attaches, creates `unsealed` (n bytes, left unsealed) if given, takes the
 * store's lock and is SIGKILLed holding it; returns its pid, reaped. */
static pid_t killed_holding_lock(const uint8_t *unsealed, uint64_t n) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        rf_store *c = NULL;
        uint32_t idx;
        uint8_t *w;
        if (rf_store_attach(g_name, &c) != 0) _exit(2);
        if (unsealed && rf_store_create_object(c, unsealed, n, 0, &idx, &w) != 0) _exit(2);
        rf_store_debug_lock_forever(c);
        char x = 1;
        if (write(fds[1], &x, 1) != 1) _exit(3);
        for (;;) pause();
    }
    char x;
    REQUIRE(read(fds[0], &x, 1) == 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    close(fds[1]);
    return pid;
}

/* A process SIGKILLed while holding the lock does not wedge the node. */
static void test_lock_owner_dies(void) {
    rf_store *s = new_store("robust", 4 << 20, NULL, NULL, 0);
    uint8_t oid[RF_OID_SIZE];
    make_oid(oid, 1, 2);
    CHECK_EQ(put(s, oid, 1000, 4), 0);
    killed_holding_lock(NULL, 0);
    CHECK_EQ(verify(s, oid, 1000, 4), 0); /* takes the lock: recovers */
    rf_store_stats sts = stats(s);
    CHECK_EQ(sts.lock_recoveries, 1);
    CHECK_EQ(rf_store_check(s), 0);
    uint8_t o2[RF_OID_SIZE];
    make_oid(o2, 3, 4);
    CHECK_EQ(put(s, o2, 5000, 6), 0);
    CHECK_EQ(verify(s, o2, 5000, 6), 0);
    drop_store(s);
}

/* Children hammer the store and are SIGKILLed at random moments (often inside the
 * lock); the store stays consistent and usable, and the unsealed objects of dead
 * writers are reclaimed (on recovery, or by release_process for those killed
 * outside the lock). */
static void test_kill_storm(void) {
    const uint64_t cap = 8 << 20;
    rf_store *s = new_store("storm", cap, NULL, NULL, 0);
    for (int round = 0; round < 30; round++) {
        pid_t pids[3];
        for (int p = 0; p < 3; p++) {
            pids[p] = fork();
            if (pids[p] == 0) {
                check_rng_state ^= (uint64_t)getpid() * 0x2545F4914F6CDD1Dull;
                uint8_t oid[RF_OID_SIZE];
                for (uint64_t i = 0;; i++) {
                    make_oid(oid, (uint64_t)getpid(), i);
                    uint32_t idx;
                    uint8_t *w;
                    if (rf_store_create_object(s, oid, check_rand() % 3000, 0, &idx, &w) == 0) {
                        if (check_rand() & 1) {
                            rf_store_seal(s, oid);
                            rf_store_delete(s, oid);
                        } else {
                            rf_store_abort(s, oid);
                        }
                    }
                }
            }
        }
        usleep((useconds_t)(2000 + check_rand() % 8000));
        for (int p = 0; p < 3; p++) kill(pids[p], SIGKILL);
        for (int p = 0; p < 3; p++) waitpid(pids[p], NULL, 0);
        CHECK_EQ(rf_store_check(s), 0);
        for (int p = 0; p < 3; p++) CHECK_EQ(rf_store_release_process(s, pids[p], NULL, NULL), 0);
        rf_store_stats st = stats(s); /* sealed objects a child did not get to delete stay */
        CHECK_EQ(st.num_objects, st.num_sealed);
        CHECK_EQ(st.num_pinned, 0);
        CHECK_EQ(rf_store_check(s), 0);
    }
    rf_store_stats st = stats(s);
    fprintf(stderr, "kill storm: %llu lock recoveries, %llu unsealed objects reclaimed\n",
            (unsigned long long)st.lock_recoveries, (unsigned long long)st.objects_reclaimed);
    uint8_t oid[RF_OID_SIZE];
    make_oid(oid, 7, 7);
    CHECK_EQ(put(s, oid, 100000, 1), 0);
    CHECK_EQ(verify(s, oid, 100000, 1), 0);
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
}

/* Fork a child that attaches, takes `pins` pins on `pin`, starts writing `unsealed`
 * (if not NULL), and exits without unpinning or sealing: a crash. Returns its pid. */
static pid_t crashing_holder(const uint8_t *pin, int pins, const uint8_t *unsealed, uint64_t n) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        rf_store *c = NULL;
        if (rf_store_attach(g_name, &c) != 0) _exit(2);
        uint32_t idx;
        const uint8_t *p;
        uint64_t sz;
        for (int i = 0; i < pins; i++)
            if (rf_store_get(c, pin, 0, &idx, &p, &sz, NULL) != 0) _exit(3);
        uint8_t *w;
        if (unsealed && rf_store_create_object(c, unsealed, n, 0, &idx, &w) != 0) _exit(4);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return pid;
}

/* A process that dies holding pins and an unsealed object: release_process gives
 * them back (the pins only of that process) and the store fills again. */
static void test_release_process(void) {
    const uint64_t cap = 8 << 20;
    rf_store *s = new_store("release", cap, NULL, NULL, 0);
    uint8_t big[RF_OID_SIZE], mine[RF_OID_SIZE], half[RF_OID_SIZE], again[RF_OID_SIZE];
    make_oid(big, 1, 1);
    make_oid(mine, 2, 2);
    make_oid(half, 3, 3);
    make_oid(again, 4, 4);
    CHECK_EQ(put(s, big, 5 << 20, 1), 0);
    CHECK_EQ(put(s, mine, 1000, 2), 0);
    uint32_t my_idx;
    const uint8_t *p;
    uint64_t sz;
    CHECK_EQ(rf_store_get(s, mine, 0, &my_idx, &p, &sz, NULL), 0); /* a live process's pin stays */
    pid_t pid = crashing_holder(big, 3, half, 2 << 20);
    CHECK_EQ(rf_store_release(s, big), 0); /* refcount 0, but the dead process's pins keep it */
    CHECK_EQ(stats(s).num_pinned, 3);      /* big, mine, half (its writer) */
    CHECK_EQ(rf_store_check(s), 0);

    uint64_t pins = 99, objects = 99;
    CHECK_EQ(rf_store_release_process(s, pid, &pins, &objects), 0);
    CHECK_EQ(pins, 3);
    CHECK_EQ(objects, 1);
    rf_store_stats st = stats(s);
    CHECK_EQ(st.num_pinned, 1);
    CHECK_EQ(st.num_objects, 1); /* mine */
    CHECK_EQ(st.pins_reclaimed, 3);
    CHECK_EQ(st.objects_reclaimed, 1);
    CHECK_EQ(rf_store_contains(s, half), 0);
    CHECK_EQ(rf_store_check(s), 0);
    CHECK_EQ(put(s, again, 5 << 20, 3), 0);
    CHECK_EQ(verify(s, again, 5 << 20, 3), 0);

    CHECK_EQ(rf_store_release_process(s, pid, &pins, &objects), 0); /* nothing left */
    CHECK_EQ(pins + objects, 0);
    CHECK_EQ(rf_store_release_process(s, 0, NULL, NULL), RF_STORE_EINVAL);
    CHECK_EQ(rf_store_unpin(s, my_idx), 0);
    CHECK_EQ(stats(s).num_pinned, 0);
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
}

/* Holder records run out (2 per object slot): pins still work, untracked; the
 * tracked ones of a dead process are given back, the untracked ones stay. */
static void test_holder_pool_exhausted(void) {
    rf_store *s = new_store("holders", 1 << 20, NULL, NULL, 1);
    uint8_t oid[RF_OID_SIZE];
    make_oid(oid, 5, 5);
    CHECK_EQ(put(s, oid, 100, 5), 0);
    pid_t a = crashing_holder(oid, 2, NULL, 0); /* record 1 */
    pid_t b = crashing_holder(oid, 1, NULL, 0); /* record 2 */
    pid_t c = crashing_holder(oid, 1, NULL, 0); /* untracked */
    CHECK_EQ(rf_store_check(s), 0);
    uint64_t pins;
    CHECK_EQ(rf_store_release_process(s, a, &pins, NULL), 0);
    CHECK_EQ(pins, 2);
    CHECK_EQ(rf_store_release_process(s, c, &pins, NULL), 0);
    CHECK_EQ(pins, 0);
    CHECK_EQ(rf_store_release_process(s, b, &pins, NULL), 0);
    CHECK_EQ(pins, 1);
    CHECK_EQ(stats(s).num_pinned, 1);
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
}

/* A process killed holding the lock: recovery gives back the pins of every dead
 * process it finds, not only the lock holder's. */
static void test_recovery_drops_dead_pins(void) {
    rf_store *s = new_store("recpins", 4 << 20, NULL, NULL, 0);
    uint8_t oid[RF_OID_SIZE];
    make_oid(oid, 6, 6);
    CHECK_EQ(put(s, oid, 1 << 20, 6), 0);
    crashing_holder(oid, 2, NULL, 0);
    CHECK_EQ(rf_store_release(s, oid), 0);
    CHECK_EQ(stats(s).num_objects, 1);
    killed_holding_lock(NULL, 0);
    rf_store_stats st = stats(s); /* takes the lock: recovers */
    CHECK_EQ(st.lock_recoveries, 1);
    CHECK_EQ(st.pins_reclaimed, 2);
    CHECK_EQ(st.num_objects, 0);
    CHECK_EQ(st.bytes_used, 0);
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
}

/* Files in dir whose name holds part (NULL: every file); -1 if dir is missing. */
static int count_files(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += de->d_name[0] != '.' && (!part || strstr(de->d_name, part));
    closedir(d);
    return n;
}

/* Readers of a store that holds 4x its capacity (every read restores, every
 * restore spills) are SIGKILLed at random moments, in the middle of restores
 * and spills too; release_process undoes what they left half done: no pins,
 * no object stuck restoring, no half-written spill file, every object intact. */
static void test_spill_kill_storm(void) {
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/rayfast-test-spillstorm-%d", (int)getpid());
    rf_store *s = new_store("spillstorm", 4 << 20, dir, NULL, 0);
    const int N = 16;
    const uint64_t n = 1 << 20;
    uint8_t oid[RF_OID_SIZE];
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i, 9);
        CHECK_EQ(put(s, oid, n, (uint8_t)(i + 1)), 0);
    }
    for (int round = 0; round < 20; round++) {
        pid_t pids[2];
        for (int p = 0; p < 2; p++) {
            pids[p] = fork();
            if (pids[p] == 0) {
                check_rng_state ^= (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
                for (;;) {
                    uint8_t o[RF_OID_SIZE];
                    make_oid(o, check_rand() % N, 9);
                    uint32_t idx;
                    const uint8_t *ptr;
                    uint64_t sz;
                    if (rf_store_get(s, o, 1000000000ll, &idx, &ptr, &sz, NULL) == 0) rf_store_unpin(s, idx);
                }
            }
        }
        usleep((useconds_t)(1000 + check_rand() % 20000));
        for (int p = 0; p < 2; p++) kill(pids[p], SIGKILL);
        for (int p = 0; p < 2; p++) waitpid(pids[p], NULL, 0);
        for (int p = 0; p < 2; p++) CHECK_EQ(rf_store_release_process(s, pids[p], NULL, NULL), 0);
        CHECK_EQ(rf_store_check(s), 0);
        CHECK_EQ(stats(s).num_pinned, 0);
    }
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i, 9);
        CHECK_EQ(verify(s, oid, n, (uint8_t)(i + 1)), 0);
    }
    rf_store_stats st = stats(s);
    fprintf(stderr, "spill kill storm: %llu restores, %llu spills, %llu pins reclaimed, %llu lock recoveries\n",
            (unsigned long long)st.restores, (unsigned long long)st.spills, (unsigned long long)st.pins_reclaimed,
            (unsigned long long)st.lock_recoveries);
    CHECK_EQ(count_files(dir, ".tmp."), 0);
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
    rmdir(dir);
}

/* Nobody calls release_process (a process the node does not know): a full store
 * reclaims what dead processes hold before it reports full; live ones keep theirs. */
static void test_full_store_reclaims_dead_processes(void) {
    rf_store *s = new_store("reclaim", 8 << 20, NULL, NULL, 0);
    uint8_t big[RF_OID_SIZE], half[RF_OID_SIZE], again[RF_OID_SIZE];
    make_oid(big, 1, 7);
    make_oid(half, 2, 7);
    make_oid(again, 3, 7);
    CHECK_EQ(put(s, big, 4 << 20, 1), 0);
    crashing_holder(big, 2, half, 2 << 20);
    CHECK_EQ(rf_store_release(s, big), 0);
    uint32_t idx;
    const uint8_t *p;
    uint64_t sz;
    uint8_t mine[RF_OID_SIZE];
    make_oid(mine, 4, 7);
    CHECK_EQ(put(s, mine, 1 << 20, 4), 0);
    CHECK_EQ(rf_store_get(s, mine, 0, &idx, &p, &sz, NULL), 0); /* a live pin */
    CHECK_EQ(rf_store_release(s, mine), 0);
    CHECK_EQ(put(s, again, 5 << 20, 3), 0); /* fits only once the dead child's holds are gone */
    rf_store_stats st = stats(s);
    CHECK_EQ(st.pins_reclaimed, 2);
    CHECK_EQ(st.objects_reclaimed, 1);
    CHECK_EQ(rf_store_contains(s, mine), 1);
    uint8_t more[RF_OID_SIZE];
    make_oid(more, 5, 7);
    CHECK_EQ(put(s, more, 3 << 20, 5), RF_STORE_FULL); /* the live pin stays */
    CHECK_EQ(rf_store_unpin(s, idx), 0);
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
}

static void test_attach_errors(void) {
    rf_store *s = NULL;
    CHECK_EQ(rf_store_attach("/rayfast-test-does-not-exist", &s), RF_STORE_ESYS);
    CHECK_EQ(rf_store_create("no-slash", 1 << 20, NULL, &s), RF_STORE_EINVAL);
    CHECK_EQ(rf_store_create("/rayfast-test-tiny", 100, NULL, &s), RF_STORE_EINVAL);
    s = new_store("dup", 1 << 20, NULL, NULL, 0);
    rf_store *t = NULL;
    CHECK_EQ(rf_store_create(g_name, 1 << 20, NULL, &t), RF_STORE_ESYS);
    CHECK_EQ(errno, EEXIST);
    CHECK_EQ(rf_store_attach(g_name, &t), 0);
    CHECK_EQ(rf_store_capacity(t), 1 << 20);
    rf_store_close(t);
    drop_store(s);
}


/* Objects larger than the data area live in fallback files: written, read by
 * this and other processes (a fork too), never evicted or spilled, the file
 * removed when the object is freed, when its writer dies unsealed (by
 * release_process or by lock recovery) and when the store is unlinked. */
static void test_fallback(void) {
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/rayfast-test-fallback-%d", (int)getpid());
    rf_store *s = new_store("fallback", 1 << 20, NULL, dir, 0);
    const uint64_t n = (3 << 20) + 5;
    uint8_t a[RF_OID_SIZE], b[RF_OID_SIZE], c[RF_OID_SIZE], d[RF_OID_SIZE];
    make_oid(a, 1, 1);
    make_oid(b, 2, 2);
    make_oid(c, 3, 3);
    make_oid(d, 4, 4);
    CHECK_EQ(put(s, a, n, 7), 0);
    CHECK_EQ(count_files(dir, NULL), 1);
    rf_store_stats st = stats(s);
    CHECK_EQ(st.num_fallback, 1);
    CHECK_EQ(st.bytes_fallback, n);
    CHECK_EQ(st.bytes_used, 0);
    CHECK_EQ(rf_store_check(s), 0);
    CHECK_EQ(verify(s, a, n, 7), 0);
    CHECK_EQ(put(s, b, 600 << 10, 1), 0); /* the data area is still all there */
    CHECK_EQ(rf_store_release(s, b), 0);
    CHECK_EQ(put(s, c, 600 << 10, 2), 0); /* evicts b, never a */
    CHECK_EQ(rf_store_contains(s, b), 0);
    CHECK_EQ(verify(s, a, n, 7), 0);

    /* a reader keeps its mapping after the object is released and deleted */
    uint32_t idx;
    const uint8_t *p;
    uint64_t sz;
    REQUIRE(rf_store_get(s, a, 0, &idx, &p, &sz, NULL) == 0);
    CHECK_EQ(sz, n);
    CHECK_EQ(rf_store_pin(s, idx), 0);
    CHECK_EQ(rf_store_unpin(s, idx), 0);
    pid_t pid = fork(); /* a fork of a process with the object mapped reads it on its own pins */
    if (pid == 0) _exit(verify(s, a, n, 7) == 0 && p[n - 1] == 7 ? 0 : 1);
    int wst;
    waitpid(pid, &wst, 0);
    CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    CHECK_EQ(rf_store_delete(s, a), 0);
    CHECK_EQ(count_files(dir, NULL), 1);
    CHECK_EQ(p[0] + p[n - 1], 14);
    CHECK_EQ(rf_store_unpin(s, idx), 0);
    CHECK_EQ(count_files(dir, NULL), 0);
    CHECK_EQ(stats(s).num_fallback, 0);

    /* another process reads it; a writer that dies unsealed leaves nothing */
    CHECK_EQ(put(s, a, n, 9), 0);
    pid = crashing_holder(a, 2, d, n);
    CHECK_EQ(count_files(dir, NULL), 2);
    CHECK_EQ(rf_store_release(s, a), 0); /* the dead reader's pins keep it */
    CHECK_EQ(count_files(dir, NULL), 2);
    uint64_t pins = 0, objects = 0;
    CHECK_EQ(rf_store_release_process(s, pid, &pins, &objects), 0);
    CHECK_EQ(pins, 2);
    CHECK_EQ(objects, 1);
    CHECK_EQ(count_files(dir, NULL), 0);
    CHECK_EQ(rf_store_check(s), 0);

    /* lock recovery drops the unsealed object of a writer that died holding the lock */
    killed_holding_lock(d, n);
    CHECK_EQ(count_files(dir, NULL), 1);
    CHECK_EQ(rf_store_contains(s, d), 0); /* recovers */
    CHECK_EQ(count_files(dir, NULL), 0);
    CHECK_EQ(rf_store_check(s), 0);

    CHECK_EQ(put(s, d, n, 3), 0);
    drop_store(s);
    CHECK_EQ(count_files(dir, NULL), 0);
    CHECK_EQ(rmdir(dir), 0);
}

/* A store whose data area is all pinned: a new object asked with
 * RF_STORE_FALLBACK_IF_FULL and a spilled object being read go to fallback
 * files instead of RF_STORE_FULL; both read back intact, and every file goes
 * when the objects are freed. Without the flag a create still fails. */
static void test_fallback_when_full(void) {
    char spill[64], fb[64];
    snprintf(spill, sizeof spill, "/tmp/rayfast-test-fbfull-spill-%d", (int)getpid());
    snprintf(fb, sizeof fb, "/tmp/rayfast-test-fbfull-fb-%d", (int)getpid());
    rf_store *s = new_store("fbfull", 4 << 20, spill, fb, 0);
    const uint64_t n = 1 << 20;
    const int N = 6;
    uint8_t oid[RF_OID_SIZE];
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i, 9);
        CHECK_EQ(put(s, oid, n, (uint8_t)(i + 1)), 0);
    }
    uint32_t pinned[3], idx;
    const uint8_t *p;
    uint64_t sz;
    for (int i = 0; i < 3; i++) { /* the last three written are in memory: pin them */
        make_oid(oid, (uint64_t)(N - 1 - i), 9);
        CHECK_EQ(rf_store_get(s, oid, 0, &pinned[i], &p, &sz, NULL), 0);
    }
    make_oid(oid, 100, 9);
    CHECK_EQ(put(s, oid, n, 1), RF_STORE_FULL);
    uint8_t *w;
    CHECK_EQ(rf_store_create_object_ex(s, oid, n, 0, RF_STORE_FALLBACK_IF_FULL, &idx, &w), 0);
    memset(w, 42, n);
    CHECK_EQ(rf_store_seal(s, oid), 0);
    CHECK_EQ(count_files(fb, NULL), 1);
    CHECK_EQ(verify(s, oid, n, 42), 0);
    make_oid(oid, 0, 9); /* spilled, and no room to restore it into */
    CHECK_EQ(rf_store_get(s, oid, 0, &idx, &p, &sz, NULL), 0);
    CHECK_EQ(sz, n);
    CHECK(p[0] == 1 && p[n - 1] == 1);
    CHECK_EQ(count_files(fb, NULL), 2);
    CHECK_EQ(stats(s).num_fallback, 2);
    CHECK_EQ(rf_store_check(s), 0);
    CHECK_EQ(rf_store_unpin(s, idx), 0);
    CHECK_EQ(verify(s, oid, n, 1), 0); /* read again through its file */
    for (int i = 0; i < 3; i++) CHECK_EQ(rf_store_unpin(s, pinned[i]), 0);
    for (int i = 0; i < N; i++) {
        make_oid(oid, (uint64_t)i, 9);
        CHECK_EQ(verify(s, oid, n, (uint8_t)(i + 1)), 0);
        CHECK_EQ(rf_store_release(s, oid), 0);
    }
    make_oid(oid, 100, 9);
    CHECK_EQ(rf_store_release(s, oid), 0);
    CHECK_EQ(count_files(fb, NULL), 0);
    CHECK_EQ(count_files(spill, NULL), 0);
    CHECK_EQ(stats(s).bytes_used, 0);
    CHECK_EQ(rf_store_check(s), 0);
    drop_store(s);
    rmdir(spill);
    rmdir(fb);
}

int main(void) {
    test_basic();
    test_allocator_random();
    test_full_free_reuse_and_coalesce();
    test_many_objects();
    test_spill();
    test_wait_seal();
    test_multiprocess();
    test_lock_owner_dies();
    test_kill_storm();
    test_release_process();
    test_holder_pool_exhausted();
    test_recovery_drops_dead_pins();
    test_spill_kill_storm();
    test_full_store_reclaims_dead_processes();
    test_attach_errors();
    test_fallback();
    test_fallback_when_full();
    return check_done("test_store");
}
