/* Unit tests for spin.c: hits, misses, patience, back-off and its reset, a bad descriptor. */
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "spin.h"

static void test_hit_and_miss(void) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    rf_spin s;
    rf_spin_init(&s, 200000);
    CHECK_EQ(rf_spin_wait(&s, sv[0]), 0);           /* nothing sent: the budget runs out */
    rf_spin_stats st;
    rf_spin_get_stats(&s, &st);
    CHECK_EQ(st.misses, 1);
    CHECK(st.spun_ns >= 200000);
    CHECK_EQ(s.skip, 0);                              /* one miss is not a pattern yet */
    CHECK_EQ(write(sv[1], "x", 1), 1);
    CHECK_EQ(rf_spin_wait(&s, sv[0]), 1);
    rf_spin_get_stats(&s, &st);
    CHECK_EQ(st.hits, 1);
    CHECK_EQ(s.missed, 0);
    close(sv[0]);
    close(sv[1]);
}

static void test_backoff_doubles_and_resets(void) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    rf_spin s;
    rf_spin_init(&s, 1000);
    for (int i = 1; i < RF_SPIN_PATIENCE; i++) {
        CHECK_EQ(rf_spin_wait(&s, sv[0]), 0);
        CHECK_EQ(s.skip, 0);
    }
    /* then each miss in a row skips 1, 2, 4, 8 waits */
    for (uint32_t expect = 1; expect <= 8; expect *= 2) {
        CHECK_EQ(rf_spin_wait(&s, sv[0]), 0);
        CHECK_EQ(s.skip, expect);
        for (uint32_t i = 0; i < expect; i++) CHECK_EQ(rf_spin_wait(&s, sv[0]), 0);
    }
    rf_spin_stats st;
    rf_spin_get_stats(&s, &st);
    CHECK_EQ(st.skipped, 1 + 2 + 4 + 8);
    for (int i = 0; i < 40; i++) {   /* the back-off is capped */
        rf_spin_wait(&s, sv[0]);
        CHECK(s.skip <= RF_SPIN_MAX_BACKOFF);
    }
    s.skip = 0;
    CHECK_EQ(write(sv[1], "x", 1), 1);
    CHECK_EQ(rf_spin_wait(&s, sv[0]), 1);
    CHECK_EQ(s.backoff, 1);                          /* a hit resets it */
    CHECK_EQ(s.missed, 0);
    close(sv[0]);
    close(sv[1]);
}

static void test_hangup_is_readable(void) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[1]);
    rf_spin s;
    rf_spin_init(&s, 1000000);
    CHECK_EQ(rf_spin_wait(&s, sv[0]), 1);            /* the reader must see the close */
    close(sv[0]);
}

static void test_disabled_and_bad_fd(void) {
    rf_spin s;
    rf_spin_init(&s, 0);
    CHECK_EQ(rf_spin_wait(&s, 0), 0);
    rf_spin_stats st;
    rf_spin_get_stats(&s, &st);
    CHECK_EQ(st.skipped, 1);
    CHECK_EQ(st.spun_ns, 0);
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[0]);
    close(sv[1]);
    rf_spin_init(&s, 1000000);
    CHECK_EQ(rf_spin_wait(&s, sv[0]), RF_EINVAL);
}

int main(void) {
    test_hit_and_miss();
    test_backoff_doubles_and_resets();
    test_hangup_is_readable();
    test_disabled_and_bad_fd();
    return check_done("test_spin");
}
