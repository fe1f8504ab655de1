/* Copies of large buffers into the shared-memory store. See memcopy.c. */
#ifndef RF_MEMCOPY_H
#define RF_MEMCOPY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Copy n bytes from src to dst (not overlapping). Large copies bypass the cache
 * and are shared with a helper thread of this process when one is free. */
void rf_copy(void *dst, const void *src, uint64_t n);

/* Map [p, p + n) of shared memory into this process ahead of writing it: one read
 * per RF_FAULT_AROUND bytes (see memcopy.c). rf_copy does it for its destination. */
#define RF_FAULT_AROUND (64u << 10)
void rf_map_in(const void *p, uint64_t n);

/* Whether copies of n bytes are shared with the helper thread (0 on one CPU). */
int rf_copy_parallel(uint64_t n);

typedef struct {
    uint64_t copies;        /* copies large enough to share */
    uint64_t chunks;        /* their chunks */
    uint64_t helper_chunks; /* of which the helper thread copied */
} rf_copy_stats;

/* This process's counters (since it started, or forked). */
void rf_copy_stats_get(rf_copy_stats *out);

/* GB/s (1e9 bytes/s) of a plain single-threaded memcpy of nbytes, best of a few runs. */
double rf_memcpy_bandwidth(uint64_t nbytes);

#ifdef __cplusplus
}
#endif
#endif
