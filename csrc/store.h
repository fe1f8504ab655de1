/* rayfast node object store: one POSIX shared-memory segment per node.
 *
 * Layout of the segment (all references inside it are offsets, never pointers):
 *
 *   [header | hash index (uint32 slots) | object entries | holder records | data area]
 *
 * The data area is managed by a boundary-tag allocator: every block starts with
 * a 64-byte header (size, previous block's size, free-list links, owner entry),
 * so every object's payload is 64-byte aligned. Free blocks sit in segregated
 * power-of-two bins (best fit within the request's bin, first fit above) and are
 * coalesced with both neighbours on free.
 *
 * Concurrency: one process-shared ROBUST mutex guards the header, index, entries
 * and allocator. A process that dies holding it is detected (EOWNERDEAD) and the
 * next locker rebuilds the derived structures (free lists, index, LRU, counters)
 * from the block chain and the entries. Waiting for a seal uses a futex on a
 * sequence counter in the header. Copies and spill I/O happen outside the lock.
 *
 * Object life: create (refcount 1, pinned by the writer) -> write -> seal.
 * get() pins the object (the caller must unpin). An object is freed when its
 * refcount is 0 (or it was deleted) and nobody pins it. Every pin is recorded
 * against the process that took it (a holder record), so that when a process
 * dies without unpinning, rf_store_release_process(pid) gives its pins back and
 * aborts the objects it was still writing; a full store does the same for every
 * dead process it finds before it reports full. When space runs short,
 * unreferenced objects are evicted LRU, then referenced sealed unpinned objects
 * are spilled LRU to files in spill_dir and restored transparently by get().
 *
 * Fallback allocation (Ray's): an object larger than the data area can ever hold,
 * one created with RF_STORE_FALLBACK_IF_FULL that finds the data area full of
 * objects in use, and a spilled object read back when there is no room for it, is
 * kept in a file of its own in fallback_dir (<fallback_dir>/<store name>.<oid
 * hex>), with an ordinary entry flagged as file-backed. Each process maps the file
 * when it first pins the object (create, get, pin) and unmaps it when its last pin
 * goes; freeing the object unlinks the file (mappings still alive keep their pages).
 * Such an object is never evicted or spilled. seal/abort must come from the process
 * that created the object (as every writer does), since they drop its pin.
 */
#ifndef RAYFAST_STORE_H
#define RAYFAST_STORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RF_OID_SIZE 20
#define RF_STORE_ALIGN 64
#define RF_STORE_BLOCK_OVERHEAD 64 /* per-object header in the data area */

/* Error codes (negative). RF_STORE_ESYS leaves errno set. */
#define RF_STORE_OK 0
#define RF_STORE_FULL (-1)  /* not enough space even after evicting and spilling */
#define RF_STORE_EXISTS (-2)      /* object id already present */
#define RF_STORE_NOTFOUND (-3)    /* unknown object id */
#define RF_STORE_TIMEOUT (-4)     /* get: object not sealed within the timeout */
#define RF_STORE_EINVAL (-5)      /* bad argument */
#define RF_STORE_ESYS (-6)        /* system call failed; see errno */
#define RF_STORE_ESTATE (-7)      /* wrong state (seal of a sealed object, ...) */
#define RF_STORE_TABLE_FULL (-8)  /* object table has no free entry */
#define RF_STORE_ENOSHM (-9)      /* /dev/shm cannot hold the requested capacity */
#define RF_STORE_EBADSEG (-10)    /* segment is not a rayfast store (bad magic/version) */

/* Object states. */
#define RF_OBJ_FREE 0
#define RF_OBJ_CREATED 1
#define RF_OBJ_SEALED 2
#define RF_OBJ_SPILLED 3
#define RF_OBJ_RESTORING 4
#define RF_OBJ_DELETED 5 /* removed from the index, waiting for its pins to go */

typedef struct rf_store rf_store;

typedef struct {
    uint64_t capacity;           /* bytes of the data area */
    uint64_t bytes_used;         /* allocated blocks, headers included */
    uint64_t bytes_free;         /* capacity - bytes_used */
    uint64_t num_objects;        /* objects in the index (any state) */
    uint64_t num_sealed;         /* sealed, in memory or spilled */
    uint64_t num_pinned;         /* objects with pins > 0 */
    uint64_t num_spilled;        /* objects currently only on disk */
    uint64_t evictions;
    uint64_t bytes_evicted;
    uint64_t spills;
    uint64_t bytes_spilled;
    uint64_t restores;
    uint64_t bytes_restored;
    uint64_t largest_free_block; /* largest payload that fits in one free block */
    uint64_t lock_recoveries;
    uint64_t max_objects;
    uint64_t pins_reclaimed;     /* pins of dead processes given back */
    uint64_t objects_reclaimed;  /* unsealed objects of dead writers aborted */
    uint64_t num_fallback;       /* objects in fallback files */
    uint64_t bytes_fallback;     /* their sizes */
} rf_store_stats;

const char *rf_store_strerror(int code);

/* Create a new segment (fails with RF_STORE_ESYS/EEXIST if the name exists). capacity is
 * the size of the data area (rounded up to 64). spill_dir may be NULL/"" (off). */
int rf_store_create(const char *name, uint64_t capacity, const char *spill_dir, rf_store **out);
/* Same, with a directory for fallback files (NULL/"": objects larger than the data
 * area fail with RF_STORE_FULL, as do those that find it full) and an explicit maximum number of objects (0 = derived
 * from capacity). */
int rf_store_create_ex(const char *name, uint64_t capacity, const char *spill_dir, const char *fallback_dir,
                       uint64_t max_objects, rf_store **out);
int rf_store_attach(const char *name, rf_store **out);
void rf_store_close(rf_store *s);
/* Remove the segment name and every spill file of this store. */
int rf_store_unlink(rf_store *s);

const char *rf_store_name(const rf_store *s);
uint64_t rf_store_capacity(const rf_store *s);
const char *rf_store_spill_dir(const rf_store *s);
const char *rf_store_fallback_dir(const rf_store *s);
/* Largest object size that can ever fit in the data area (capacity minus one block
 * header); larger ones go to fallback files. */
uint64_t rf_store_max_object_size(const rf_store *s);
/* Fault in bytes [from, to) of the data area (see store.c). */
int rf_store_warm(rf_store *s, uint64_t from, uint64_t to);
/* End of the highest block the allocator has ever handed out (read without the lock). */
uint64_t rf_store_heap_top(const rf_store *s);

/* Create an object of data_size + meta_size bytes; returns its entry index and a
 * writable pointer. The object has refcount 1 and the writer's pin. One larger than
 * the data area gets a fallback file (RF_STORE_ESYS if it cannot be made: errno). */
int rf_store_create_object(rf_store *s, const uint8_t *oid, uint64_t data_size, uint64_t meta_size,
                           uint32_t *idx_out, uint8_t **ptr_out);
/* The same with flags: RF_STORE_FALLBACK_IF_FULL makes an object that finds no room
 * (nothing left to evict or spill: all in use) a fallback file too, as Ray's fallback
 * allocation, instead of RF_STORE_FULL (still that without a fallback directory). */
#define RF_STORE_FALLBACK_IF_FULL 1
int rf_store_create_object_ex(rf_store *s, const uint8_t *oid, uint64_t data_size, uint64_t meta_size, int flags,
                              uint32_t *idx_out, uint8_t **ptr_out);
int rf_store_seal(rf_store *s, const uint8_t *oid);
int rf_store_abort(rf_store *s, const uint8_t *oid);

/* Get a sealed object: waits while unsealed up to timeout_ns (<0 = forever,
 * 0 = no wait), restores spilled objects. On success the object is PINNED: call
 * rf_store_unpin(s, *idx_out) when done with the pointer. */
int rf_store_get(rf_store *s, const uint8_t *oid, int64_t timeout_ns, uint32_t *idx_out,
                 const uint8_t **ptr_out, uint64_t *data_size_out, uint64_t *meta_size_out);
int rf_store_pin(rf_store *s, uint32_t idx);
int rf_store_unpin(rf_store *s, uint32_t idx);

int rf_store_contains(rf_store *s, const uint8_t *oid); /* 1, 0, or <0 */
int rf_store_size_of(rf_store *s, const uint8_t *oid, uint64_t *size_out);
int rf_store_incref(rf_store *s, const uint8_t *oid);
int rf_store_release(rf_store *s, const uint8_t *oid);
int rf_store_delete(rf_store *s, const uint8_t *oid);
/* Give back everything process pid held: its pins (the objects they kept alive
 * are freed if nothing else holds them), the objects it created and never sealed,
 * and a restore or spill it was in the middle of. Only for a process that has
 * exited: the memory under its views would be reused. Counts what it gave back
 * in *pins_out and *objects_out (each may be NULL). */
int rf_store_release_process(rf_store *s, int32_t pid, uint64_t *pins_out, uint64_t *objects_out);
/* Copy up to max ids (20 bytes each) of sealed objects into buf; returns the count
 * written and sets *total to the number of such objects. written_by != 0: only the
 * objects process written_by wrote that still hold the reference they were created
 * with (the node's, until the node releases it): after that process died, those the
 * node never heard of are garbage. */
int rf_store_list(rf_store *s, int32_t written_by, uint8_t *buf, uint64_t max, uint64_t *total);
int rf_store_stats_get(rf_store *s, rf_store_stats *out);
/* Walk the block chain and the table and check every invariant; 0 if consistent. */
int rf_store_check(rf_store *s);
/* Offset of an object's payload inside the data area (tests). */
int rf_store_debug_offset(rf_store *s, const uint8_t *oid, uint64_t *off_out, uint64_t *alloc_out);
/* Take the store lock and never release it (tests: kill a process holding it). */
void rf_store_debug_lock_forever(rf_store *s);

#ifdef __cplusplus
}
#endif
#endif
