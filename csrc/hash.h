/* hash.h -- 64-bit hashing of byte strings and deterministic id derivation.
 *
 * rf_hash64 is a wyhash-style hash: 64x64->128 bit multiplies folded with xor
 * ("mum"), consuming 16 bytes per round. It is not meant to resist deliberate
 * flooding; the ids it hashes are random or derived from random ids. */
#ifndef RF_HASH_H
#define RF_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Default seed, fixed so hashes agree across processes (ObjectID.__hash__). */
#define RF_HASH_SEED 0x243f6a8885a308d3ULL

uint64_t rf_hash64_seed(const void *data, size_t len, uint64_t seed);

static inline uint64_t rf_hash64(const void *data, size_t len) {
    return rf_hash64_seed(data, len, RF_HASH_SEED);
}

/* Finaliser for one 64-bit word (splitmix64); a bijection. */
uint64_t rf_mix64(uint64_t x);

/* Derive a 16-byte id from (parent, counter). Deterministic, and different
 * counters or parents give unrelated-looking ids. out may not alias parent. */
void rf_derive_id(const uint8_t *parent, size_t n, uint64_t counter, uint8_t out[16]);

#endif
