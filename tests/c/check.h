/* What every C unit test shares: CHECK/CHECK_EQ count a failure and go on,
 * REQUIRE stops the test; check_rand is a fixed-seed xorshift64, so a failing
 * random run repeats; check_done is main's last word. */
#ifndef RF_TEST_CHECK_H
#define RF_TEST_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                            \
        }                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                                             \
    do {                                                                                                           \
        long long _a = (long long)(a), _b = (long long)(b);                                                        \
        if (_a != _b) {                                                                                            \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s = %lld, %s = %lld\n", __FILE__, __LINE__, #a, _a, #b, _b); \
            failures++;                                                                                            \
        }                                                                                                          \
    } while (0)

#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* A forked child may mix its pid into check_rng_state to get its own sequence. */
static uint64_t check_rng_state = 88172645463325252ULL;
static inline uint64_t check_rand(void) {
    check_rng_state ^= check_rng_state << 13;
    check_rng_state ^= check_rng_state >> 7;
    check_rng_state ^= check_rng_state << 17;
    return check_rng_state;
}

/* main's exit status: 0, or 1 after saying how many checks failed. */
static inline int check_done(const char *test) {
    if (failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", test, failures);
        return 1;
    }
    printf("%s: all passed\n", test);
    return 0;
}

#endif
