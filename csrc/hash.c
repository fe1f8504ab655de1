/* hash.c -- see hash.h. */
#include "hash.h"

#include <string.h>

/* Odd constants with well spread bits (from the wyhash family). */
#define P0 0xa0761d6478bd642fULL
#define P1 0xe7037ed1a0b428dbULL
#define P2 0x8ebc6af09c88c6e3ULL
#define P3 0x589965cc75374cc3ULL

/* Full 128-bit product folded to 64 bits: every input bit reaches the output. */
static inline uint64_t mum(uint64_t a, uint64_t b) {
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* Unaligned little-endian loads; memcpy compiles to a single mov. */
static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint64_t load_tail(const uint8_t *p, size_t k) {
    /* k in 1..7: assemble the bytes so the result does not depend on alignment. */
    uint64_t v = 0;
    for (size_t i = 0; i < k; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

uint64_t rf_hash64_seed(const void *data, size_t len, uint64_t seed) {
    const uint8_t *p = data;
    size_t n = len;
    uint64_t h = seed ^ mum(seed ^ P0, P1);

    while (n >= 16) {
        h = mum(load64(p) ^ P1, load64(p + 8) ^ h);
        p += 16;
        n -= 16;
    }
    uint64_t a = 0, b = 0;
    if (n >= 8) {
        a = load64(p);
        b = n > 8 ? load_tail(p + 8, n - 8) : 0;
    } else if (n > 0) {
        a = load_tail(p, n);
    }
    /* Length goes into the final round so "ab" and "ab\0" differ. */
    h = mum(a ^ P2, b ^ h ^ P3);
    return mum(h ^ P0, (uint64_t)len ^ P1);
}

uint64_t rf_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline void store64(uint8_t *p, uint64_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

void rf_derive_id(const uint8_t *parent, size_t n, uint64_t counter, uint8_t out[16]) {
    /* Two independently seeded hashes of the parent give 128 bits; the counter
     * is mixed through a bijection first so consecutive counters diverge fully. */
    uint64_t c = rf_mix64(counter);
    uint64_t lo = rf_hash64_seed(parent, n, RF_HASH_SEED ^ c);
    uint64_t hi = rf_hash64_seed(parent, n, P2 ^ rf_mix64(c ^ P3));
    store64(out, rf_mix64(lo ^ c));
    store64(out + 8, rf_mix64(hi + lo));
}
