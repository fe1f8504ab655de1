/* rayfast node object store. See store.h for the design. */
#include "store.h"
#include "memcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define STORE_MAGIC 0x7261796673746f72ull /* "rayfstor" */
#define STORE_VERSION 4u
#define NIL32 UINT32_MAX
#define NIL64 UINT64_MAX
#define NBINS 64
#define BLK_MAGIC 0xb10cb10cu
#define HDR_SIZE 4096u
#define SPILL_DIR_MAX 1024
#define MIN_BLOCK 128u /* 64 header + 64 payload */

/* entry flags */
#define EF_INDEXED 0x01u
#define EF_IN_LRU 0x02u
#define EF_SPILL_FILE 0x04u
#define EF_DELETE_PENDING 0x08u
#define EF_SPILLING 0x10u
#define EF_CHECKED 0x20u
#define EF_FALLBACK 0x40u /* data in a fallback file, never in the data area */

typedef struct {
    uint64_t size;      /* whole block, header included; multiple of 64 */
    uint64_t prev_size; /* size of the previous block (0 for the first) */
    uint64_t next_free; /* free-list links (offsets), NIL64 at ends */
    uint64_t prev_free;
    uint32_t is_free;
    uint32_t owner; /* entry index when allocated */
    uint32_t magic;
    uint32_t pad0;
    uint64_t pad[2];
} blk_t;
_Static_assert(sizeof(blk_t) == RF_STORE_BLOCK_OVERHEAD, "block header must be 64 bytes");

typedef struct {
    uint8_t oid[RF_OID_SIZE];
    uint32_t state;
    uint64_t hash;
    uint64_t block; /* block offset in the data area or NIL64 */
    uint64_t data_size;
    uint64_t meta_size;
    int64_t refcount;
    int64_t pins; /* all pins: the writer's while CREATED, and every process's */
    uint32_t lru_prev, lru_next;
    uint32_t next_free;
    /* The process writing the object's memory or spill file: its creator until it is
     * sealed, then whoever restores or spills it. What it leaves half done when it
     * dies is undone by rf_store_release_process and by lock recovery. */
    int32_t writer_pid;
    uint32_t flags;
    uint32_t holders; /* this object's holder records (1-based, 0 = none) */
} entry_t;

/* The pins one process holds on one object. Every object keeps the list of its
 * holders, so that the pins of a process that died without unpinning (crash,
 * SIGKILL, exit with views alive) can be given back. Records come from a pool of
 * 2 per object slot; a pin taken while it is exhausted is counted in e->pins
 * only and would outlive its process, as every pin did before the records. */
typedef struct {
    int32_t pid;
    uint32_t count; /* pins held; 0 = free record */
    uint32_t next;  /* next holder of the same object, or next free record (1-based, 0 = end) */
    uint32_t mark;  /* lock recovery: reached from an object */
} holder_t;

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t hdr_size;
    uint64_t segment_size;
    uint64_t capacity; /* data area size */
    uint64_t index_off;
    uint64_t index_slots; /* power of two */
    uint64_t entries_off;
    uint64_t max_entries;
    uint64_t holders_off;
    uint64_t max_holders;
    uint64_t data_off;
    pthread_mutex_t mutex;
    _Atomic uint32_t seal_seq;
    _Atomic uint32_t waiters;
    /* everything below is guarded by mutex */
    uint64_t bytes_used;
    uint64_t num_indexed;
    uint32_t free_entry_head;
    uint32_t lru_head, lru_tail; /* head = most recently used */
    uint32_t entries_hwm;        /* entries below this have been initialised (lazily, see entry_alloc) */
    uint32_t free_holder_head;   /* 1-based, 0 = none */
    uint32_t holders_hwm;        /* records handed out at least once (lazily, like entries) */
    uint64_t bin_bitmap;
    uint64_t bins[NBINS];
    uint64_t heap_top; /* end of the highest block ever handed out (rf_store_heap_top) */
    uint64_t evictions, bytes_evicted, spills, bytes_spilled, restores, bytes_restored;
    uint64_t lock_recoveries;
    uint64_t pins_reclaimed, objects_reclaimed; /* from processes that died */
    char spill_dir[SPILL_DIR_MAX];
    char fallback_dir[SPILL_DIR_MAX];
} header_t;
_Static_assert(sizeof(header_t) <= HDR_SIZE, "header too large");

/* This process's mapping of a fallback object and how many of its pins use it. */
typedef struct {
    uint32_t idx;
    uint32_t refs;
    uint8_t *ptr;
    uint64_t len;
} fb_map_t;

struct rf_store {
    uint8_t *base;
    size_t size;
    header_t *h;
    uint32_t *index;
    entry_t *entries;
    holder_t *holders;
    uint8_t *data;
    uint64_t *prefaulted; /* bit per PREFAULT_CHUNK this process has mapped (see prefault) */
    pid_t prefault_pid;   /* whose page tables those bits describe */
    fb_map_t *fb_maps;    /* mapped fallback objects; changed only under the store lock */
    uint32_t fb_n, fb_cap;
    pid_t fb_pid; /* whose mappings fb_maps counts */
    int fd;
    char name[256];
};

/* ------------------------------------------------------------------ utils */

const char *rf_store_strerror(int code) {
    switch (code) {
    case RF_STORE_OK: return "ok";
    case RF_STORE_FULL: return "object store full";
    case RF_STORE_EXISTS: return "object already exists";
    case RF_STORE_NOTFOUND: return "object not found";
    case RF_STORE_TIMEOUT: return "timed out waiting for the object to be sealed";
    case RF_STORE_EINVAL: return "invalid argument";
    case RF_STORE_ESYS: return "system call failed";
    case RF_STORE_ESTATE: return "object is in the wrong state for this operation";
    case RF_STORE_TABLE_FULL: return "object table full";
    case RF_STORE_ENOSHM: return "not enough free space in /dev/shm";
    case RF_STORE_EBADSEG: return "not a rayfast object store segment";
    default: return "unknown error";
    }
}

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t oid_hash(const uint8_t *oid) {
    uint64_t a, b;
    uint32_t c;
    memcpy(&a, oid, 8);
    memcpy(&b, oid + 8, 8);
    memcpy(&c, oid + 16, 4);
    uint64_t h = a * 0x9E3779B97F4A7C15ull;
    h ^= rotl64(b * 0xC2B2AE3D27D4EB4Full, 31);
    h ^= rotl64((uint64_t)c * 0x165667B19E3779F9ull, 17);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static inline uint64_t block_need(uint64_t total) {
    uint64_t p = round_up(total ? total : 1, RF_STORE_ALIGN);
    return p + RF_STORE_BLOCK_OVERHEAD;
}

static inline blk_t *BLK(rf_store *s, uint64_t off) { return (blk_t *)(s->data + off); }
static inline uint8_t *PAYLOAD(rf_store *s, uint64_t off) { return s->data + off + RF_STORE_BLOCK_OVERHEAD; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void wake_waiters(rf_store *s) {
    atomic_fetch_add(&s->h->seal_seq, 1);
    if (atomic_load(&s->h->waiters) > 0)
        syscall(SYS_futex, &s->h->seal_seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void oid_hex(const uint8_t *oid, char *out /* 41 */) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < RF_OID_SIZE; i++) {
        out[2 * i] = hx[oid[i] >> 4];
        out[2 * i + 1] = hx[oid[i] & 15];
    }
    out[2 * RF_OID_SIZE] = 0;
}

static void spill_path(const char *dir, const uint8_t *oid, char *out, size_t n) {
    char hex[41];
    oid_hex(oid, hex);
    snprintf(out, n, "%s/%s", dir, hex);
}

/* Where process pid writes a spill file before renaming it into place. */
static void spill_tmp_path(const char *dir, const uint8_t *oid, int32_t pid, char *out, size_t n) {
    char path[SPILL_DIR_MAX + 64];
    spill_path(dir, oid, path, sizeof path);
    snprintf(out, n, "%s.tmp.%d", path, (int)pid);
}

#define FALLBACK_PATH_MAX (SPILL_DIR_MAX + 320)
static void fallback_path(rf_store *s, const uint8_t *oid, char *out, size_t n) {
    char hex[41];
    oid_hex(oid, hex);
    snprintf(out, n, "%s/%s.%s", s->h->fallback_dir, s->name + 1, hex);
}

static void fallback_unlink(rf_store *s, const uint8_t *oid) {
    char path[FALLBACK_PATH_MAX];
    fallback_path(s, oid, path, sizeof path);
    unlink(path);
}

/* ------------------------------------------------------------ allocator */

static inline int bin_of(uint64_t size) { /* floor(log2(size/64)) */
    uint64_t u = size / RF_STORE_ALIGN;
    int b = 63 - __builtin_clzll(u);
    return b < NBINS ? b : NBINS - 1;
}

static void bin_insert(rf_store *s, uint64_t off) {
    header_t *h = s->h;
    blk_t *b = BLK(s, off);
    int i = bin_of(b->size);
    b->prev_free = NIL64;
    b->next_free = h->bins[i];
    if (h->bins[i] != NIL64) BLK(s, h->bins[i])->prev_free = off;
    h->bins[i] = off;
    h->bin_bitmap |= 1ull << i;
}

static void bin_remove(rf_store *s, uint64_t off) {
    header_t *h = s->h;
    blk_t *b = BLK(s, off);
    int i = bin_of(b->size);
    if (b->prev_free != NIL64) BLK(s, b->prev_free)->next_free = b->next_free;
    else h->bins[i] = b->next_free;
    if (b->next_free != NIL64) BLK(s, b->next_free)->prev_free = b->prev_free;
    if (h->bins[i] == NIL64) h->bin_bitmap &= ~(1ull << i);
    b->next_free = b->prev_free = NIL64;
}

/* Allocate a block of `need` bytes (header included). Returns 0 and the block offset. */
static int heap_alloc(rf_store *s, uint64_t need, uint64_t *out) {
    header_t *h = s->h;
    int i = bin_of(need);
    uint64_t best = NIL64, best_size = UINT64_MAX;
    if (h->bin_bitmap & (1ull << i)) { /* best fit within the request's own bin (bounded scan) */
        int scanned = 0;
        for (uint64_t o = h->bins[i]; o != NIL64 && scanned < 256; o = BLK(s, o)->next_free, scanned++) {
            uint64_t sz = BLK(s, o)->size;
            if (sz >= need && sz < best_size) {
                best = o;
                best_size = sz;
                if (sz == need) break;
            }
        }
    }
    if (best == NIL64) {
        uint64_t higher = (i + 1 < 64) ? (h->bin_bitmap & ~((2ull << i) - 1)) : 0;
        if (!higher) return -1;
        int j = __builtin_ctzll(higher);
        /* every block in bin j is >= 2^j*64 > need; take the smallest of a few */
        int scanned = 0;
        for (uint64_t o = h->bins[j]; o != NIL64 && scanned < 16; o = BLK(s, o)->next_free, scanned++) {
            uint64_t sz = BLK(s, o)->size;
            if (sz < best_size) {
                best = o;
                best_size = sz;
            }
        }
    }
    bin_remove(s, best);
    blk_t *b = BLK(s, best);
    if (b->size - need >= MIN_BLOCK) {
        /* split; write the remainder's header before shrinking b so that a forward
         * walk of the chain is consistent at every step */
        uint64_t rem_off = best + need, rem = b->size - need;
        blk_t *r = BLK(s, rem_off);
        r->size = rem;
        r->prev_size = need;
        r->is_free = 1;
        r->owner = NIL32;
        r->magic = BLK_MAGIC;
        uint64_t nxt = best + b->size;
        if (nxt < h->capacity) BLK(s, nxt)->prev_size = rem;
        b->size = need;
        bin_insert(s, rem_off);
    }
    b->is_free = 0;
    h->bytes_used += b->size;
    if (best + b->size > h->heap_top) __atomic_store_n(&h->heap_top, best + b->size, __ATOMIC_RELAXED);
    *out = best;
    return 0;
}

static void heap_free(rf_store *s, uint64_t off) {
    header_t *h = s->h;
    blk_t *b = BLK(s, off);
    h->bytes_used -= b->size;
    b->is_free = 1;
    b->owner = NIL32;
    uint64_t nxt = off + b->size;
    if (nxt < h->capacity && BLK(s, nxt)->is_free) {
        bin_remove(s, nxt);
        b->size += BLK(s, nxt)->size;
    }
    if (off > 0) {
        uint64_t prv = off - b->prev_size;
        if (BLK(s, prv)->is_free) {
            bin_remove(s, prv);
            BLK(s, prv)->size += b->size;
            off = prv;
            b = BLK(s, prv);
        }
    }
    nxt = off + b->size;
    if (nxt < h->capacity) BLK(s, nxt)->prev_size = b->size;
    bin_insert(s, off);
}

static uint64_t largest_free(rf_store *s) {
    header_t *h = s->h;
    if (!h->bin_bitmap) return 0;
    int j = 63 - __builtin_clzll(h->bin_bitmap);
    uint64_t m = 0;
    for (uint64_t o = h->bins[j]; o != NIL64; o = BLK(s, o)->next_free)
        if (BLK(s, o)->size > m) m = BLK(s, o)->size;
    return m > RF_STORE_BLOCK_OVERHEAD ? m - RF_STORE_BLOCK_OVERHEAD : 0;
}

/* -------------------------------------------------------------- index */

static uint32_t index_find(rf_store *s, const uint8_t *oid, uint64_t hash, uint64_t *slot_out) {
    uint64_t mask = s->h->index_slots - 1;
    for (uint64_t i = hash & mask;; i = (i + 1) & mask) {
        uint32_t v = s->index[i];
        if (!v) return NIL32;
        entry_t *e = &s->entries[v - 1];
        if (e->hash == hash && memcmp(e->oid, oid, RF_OID_SIZE) == 0) {
            if (slot_out) *slot_out = i;
            return v - 1;
        }
    }
}

static void index_insert(rf_store *s, uint32_t idx) {
    uint64_t mask = s->h->index_slots - 1;
    uint64_t i = s->entries[idx].hash & mask;
    while (s->index[i]) i = (i + 1) & mask;
    s->index[i] = idx + 1;
    s->entries[idx].flags |= EF_INDEXED;
    s->h->num_indexed++;
}

static void index_remove(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    if (!(e->flags & EF_INDEXED)) return;
    uint64_t i = 0;
    if (index_find(s, e->oid, e->hash, &i) != idx) return;
    uint64_t mask = s->h->index_slots - 1, j = i;
    for (;;) { /* backward-shift deletion: no tombstones */
        j = (j + 1) & mask;
        uint32_t v = s->index[j];
        if (!v) break;
        uint64_t k = s->entries[v - 1].hash & mask;
        int stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (stays) continue;
        s->index[i] = v;
        i = j;
    }
    s->index[i] = 0;
    e->flags &= ~EF_INDEXED;
    s->h->num_indexed--;
}

/* ---------------------------------------------------------------- LRU */

static void lru_unlink(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    if (!(e->flags & EF_IN_LRU)) return;
    if (e->lru_prev != NIL32) s->entries[e->lru_prev].lru_next = e->lru_next;
    else s->h->lru_head = e->lru_next;
    if (e->lru_next != NIL32) s->entries[e->lru_next].lru_prev = e->lru_prev;
    else s->h->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NIL32;
    e->flags &= ~EF_IN_LRU;
}

static void lru_push_front(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    e->lru_prev = NIL32;
    e->lru_next = s->h->lru_head;
    if (s->h->lru_head != NIL32) s->entries[s->h->lru_head].lru_prev = idx;
    else s->h->lru_tail = idx;
    s->h->lru_head = idx;
    e->flags |= EF_IN_LRU;
}

static inline void lru_touch(rf_store *s, uint32_t idx) {
    if (s->h->lru_head == idx) return;
    lru_unlink(s, idx);
    lru_push_front(s, idx);
}

/* ------------------------------------------------------------- entries */

/* Entries are initialised on first use rather than at create time, so that a
 * store sized for a million objects does not touch their memory up front. */
static uint32_t entry_alloc(rf_store *s) {
    header_t *h = s->h;
    uint32_t idx = h->free_entry_head;
    if (idx != NIL32) {
        h->free_entry_head = s->entries[idx].next_free;
        return idx;
    }
    if (h->entries_hwm >= h->max_entries) return NIL32;
    idx = h->entries_hwm++;
    entry_t *e = &s->entries[idx];
    memset(e, 0, sizeof *e);
    e->block = NIL64;
    e->lru_prev = e->lru_next = NIL32;
    e->next_free = NIL32;
    return idx;
}

/* ------------------------------------------------------------- holders */

static inline holder_t *HOLDER(rf_store *s, uint32_t ref) { return &s->holders[ref - 1]; }

static uint32_t holder_alloc(rf_store *s) {
    header_t *h = s->h;
    uint32_t ref = h->free_holder_head;
    if (ref) {
        h->free_holder_head = HOLDER(s, ref)->next;
        return ref;
    }
    if (h->holders_hwm >= h->max_holders) return 0;
    return ++h->holders_hwm;
}

static void holder_free(rf_store *s, uint32_t ref) {
    holder_t *r = HOLDER(s, ref);
    r->pid = 0;
    r->count = 0;
    r->next = s->h->free_holder_head;
    s->h->free_holder_head = ref;
}

/* Take one pin on an object for process pid. */
static void pin_for(rf_store *s, uint32_t idx, int32_t pid) {
    entry_t *e = &s->entries[idx];
    e->pins++;
    for (uint32_t ref = e->holders; ref; ref = HOLDER(s, ref)->next) {
        if (HOLDER(s, ref)->pid == pid) {
            HOLDER(s, ref)->count++;
            return;
        }
    }
    uint32_t ref = holder_alloc(s);
    if (!ref) return; /* pool exhausted: an untracked pin */
    holder_t *r = HOLDER(s, ref);
    r->pid = pid;
    r->count = 1;
    r->next = e->holders;
    e->holders = ref;
}

/* Drop one pin of process pid on an object (a pid without a record held an
 * untracked one), or with all set every pin it holds. Returns how many were
 * dropped; the caller decides whether the object can go. */
static int64_t unpin_for(rf_store *s, uint32_t idx, int32_t pid, int all) {
    entry_t *e = &s->entries[idx];
    int64_t n = all ? 0 : 1;
    for (uint32_t *link = &e->holders; *link; link = &HOLDER(s, *link)->next) {
        uint32_t ref = *link;
        holder_t *r = HOLDER(s, ref);
        if (r->pid != pid) continue;
        if (all) n = r->count;
        r->count -= (uint32_t)n;
        if (r->count == 0) {
            *link = r->next;
            holder_free(s, ref);
        }
        break;
    }
    if (n > e->pins) n = e->pins; /* never below zero, whatever a caller unpinned */
    e->pins -= n;
    return n;
}

/* Free an entry and everything it owns: index slot, LRU link, block, spill file,
 * holder records. */
static void free_entry(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    while (e->holders) {
        uint32_t ref = e->holders;
        e->holders = HOLDER(s, ref)->next;
        holder_free(s, ref);
    }
    index_remove(s, idx);
    lru_unlink(s, idx);
    if (e->block != NIL64) {
        heap_free(s, e->block);
        e->block = NIL64;
    }
    if ((e->flags & EF_SPILL_FILE) && s->h->spill_dir[0]) {
        char path[SPILL_DIR_MAX + 64];
        spill_path(s->h->spill_dir, e->oid, path, sizeof path);
        unlink(path);
    }
    if (e->flags & EF_FALLBACK) fallback_unlink(s, e->oid);
    memset(e, 0, sizeof *e);
    e->state = RF_OBJ_FREE;
    e->block = NIL64;
    e->lru_prev = e->lru_next = NIL32;
    e->next_free = s->h->free_entry_head;
    s->h->free_entry_head = idx;
}

/* Remove an object from the index; free it now if unpinned, else when unpinned. */
static void do_delete(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    if (e->pins <= 0) {
        free_entry(s, idx);
        return;
    }
    index_remove(s, idx);
    lru_unlink(s, idx);
    e->state = RF_OBJ_DELETED;
}

static void maybe_free(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    if (e->pins > 0) return;
    if (e->state == RF_OBJ_DELETED) {
        free_entry(s, idx);
    } else if (e->state == RF_OBJ_SEALED || e->state == RF_OBJ_SPILLED) {
        if (e->refcount <= 0 || (e->flags & EF_DELETE_PENDING)) free_entry(s, idx);
    }
}

/* ------------------------------------------------------ lock + recovery */

static int pid_alive(int32_t pid) {
    if (pid <= 0) return 0;
    return !(kill(pid, 0) < 0 && errno == ESRCH);
}

/* Recovery, last step: keep the holder records of live processes, drop those of
 * dead ones with their pins, cut a list where a half-done update left a bad link,
 * and rebuild the free pool from every record no object reaches. */
static void recover_holders(rf_store *s) {
    header_t *h = s->h;
    enum { UNSEEN, KEPT, DROPPED };
    for (uint32_t ref = 1; ref <= h->holders_hwm; ref++) HOLDER(s, ref)->mark = UNSEEN;
    for (uint32_t i = 0; i < h->entries_hwm; i++) {
        entry_t *e = &s->entries[i];
        if (e->state == RF_OBJ_FREE) continue;
        int64_t held = 0;
        uint32_t *link = &e->holders;
        while (*link) {
            uint32_t ref = *link;
            holder_t *r = ref <= h->holders_hwm ? HOLDER(s, ref) : NULL;
            if (!r || r->mark != UNSEEN || r->count == 0) {
                *link = 0;
                break;
            }
            if (pid_alive(r->pid)) {
                r->mark = KEPT;
                held += r->count;
                link = &r->next;
            } else {
                r->mark = DROPPED;
                e->pins -= r->count;
                h->pins_reclaimed += r->count;
                *link = r->next;
            }
        }
        if (e->pins < held) e->pins = held;
    }
    h->free_holder_head = 0;
    for (uint32_t ref = h->holders_hwm; ref > 0; ref--)
        if (HOLDER(s, ref)->mark != KEPT) holder_free(s, ref);
    for (uint32_t i = 0; i < h->entries_hwm; i++)
        if (s->entries[i].state != RF_OBJ_FREE) maybe_free(s, i);
}

/* Rebuild the derived state after a process died holding the lock. The block chain
 * (sizes) and the entries are the source of truth; free lists, index, LRU, entry
 * free list and counters are rebuilt from them, then the holder records are
 * checked against the entries. */
static void recover(rf_store *s) {
    header_t *h = s->h;
    uint64_t cap = h->capacity;
    for (uint64_t i = 0; i < h->max_entries; i++) s->entries[i].flags &= ~EF_CHECKED;
    /* 1. walk blocks, validate owners */
    uint64_t off = 0, prev = 0;
    while (off < cap) {
        blk_t *b = BLK(s, off);
        if (b->size < RF_STORE_BLOCK_OVERHEAD || b->size % RF_STORE_ALIGN || b->size > cap - off) {
            /* corrupt: the rest becomes one free block */
            b->size = cap - off;
            b->is_free = 1;
        }
        b->prev_size = prev;
        b->magic = BLK_MAGIC;
        if (!b->is_free) {
            uint32_t o = b->owner;
            int ok = o < h->max_entries;
            if (ok) {
                entry_t *e = &s->entries[o];
                ok = (e->state == RF_OBJ_CREATED || e->state == RF_OBJ_SEALED || e->state == RF_OBJ_RESTORING ||
                      e->state == RF_OBJ_DELETED) &&
                     e->block == off && !(e->flags & EF_CHECKED);
                if (ok) e->flags |= EF_CHECKED;
            }
            if (!ok) {
                b->is_free = 1;
                b->owner = NIL32;
            }
        }
        prev = b->size;
        off += b->size;
    }
    /* a fallback object's data is its file: as good as a checked block */
    for (uint64_t i = 0; i < h->entries_hwm; i++)
        if (s->entries[i].flags & EF_FALLBACK) s->entries[i].flags |= EF_CHECKED;
    /* 2. coalesce free neighbours and rebuild bins and bytes_used */
    for (int i = 0; i < NBINS; i++) h->bins[i] = NIL64;
    h->bin_bitmap = 0;
    h->bytes_used = 0;
    off = 0;
    prev = 0;
    while (off < cap) {
        blk_t *b = BLK(s, off);
        if (b->is_free) {
            uint64_t n = off + b->size;
            while (n < cap && BLK(s, n)->is_free) {
                b->size += BLK(s, n)->size;
                n = off + b->size;
            }
        }
        b->prev_size = prev;
        if (b->is_free) bin_insert(s, off);
        else h->bytes_used += b->size;
        prev = b->size;
        off += b->size;
    }
    /* 3. entries: drop those without a valid block or whose writer died */
    memset(s->index, 0, h->index_slots * sizeof(uint32_t));
    h->num_indexed = 0;
    h->lru_head = h->lru_tail = NIL32;
    h->free_entry_head = NIL32;
    for (uint64_t i = h->entries_hwm; i-- > 0;) {
        entry_t *e = &s->entries[i];
        uint32_t idx = (uint32_t)i;
        int keep = 1;
        switch (e->state) {
        case RF_OBJ_FREE: keep = 0; break;
        case RF_OBJ_SEALED:
            keep = (e->flags & EF_CHECKED) != 0;
            if (!keep && (e->flags & EF_SPILL_FILE)) { /* died dropping it to its spill file */
                e->block = NIL64;
                e->state = RF_OBJ_SPILLED;
                keep = 1;
            }
            break;
        case RF_OBJ_DELETED: keep = (e->flags & EF_CHECKED) != 0; break;
        case RF_OBJ_CREATED:
            keep = pid_alive(e->writer_pid) && (e->block == NIL64 || (e->flags & EF_CHECKED));
            break;
        case RF_OBJ_RESTORING:
            /* restorer may have died: fall back to the spill file */
            if (!pid_alive(e->writer_pid)) {
                if (e->block != NIL64 && (e->flags & EF_CHECKED)) heap_free(s, e->block);
                e->block = NIL64;
                e->state = RF_OBJ_SPILLED; /* its pin goes with its holder record (4.) */
            }
            keep = 1;
            break;
        case RF_OBJ_SPILLED: keep = (e->flags & EF_SPILL_FILE) != 0; break;
        default: keep = 0;
        }
        if (keep && e->state == RF_OBJ_SPILLED && e->block != NIL64) e->block = NIL64;
        if (!keep) {
            if (e->block != NIL64 && (e->flags & EF_CHECKED)) heap_free(s, e->block);
            if (e->flags & EF_FALLBACK) fallback_unlink(s, e->oid);
            memset(e, 0, sizeof *e);
            e->state = RF_OBJ_FREE;
            e->block = NIL64;
            e->lru_prev = e->lru_next = NIL32;
            e->next_free = h->free_entry_head;
            h->free_entry_head = idx;
            continue;
        }
        e->flags &= ~(EF_INDEXED | EF_IN_LRU | EF_SPILLING | EF_CHECKED);
        e->lru_prev = e->lru_next = NIL32;
        if (e->state == RF_OBJ_DELETED) continue;
        if (index_find(s, e->oid, e->hash, NULL) != NIL32) { /* duplicate id: keep one */
            if (e->pins > 0) e->state = RF_OBJ_DELETED;
            else {
                if (e->block != NIL64) heap_free(s, e->block);
                e->flags &= ~EF_SPILL_FILE;
                memset(e, 0, sizeof *e);
                e->block = NIL64;
                e->lru_prev = e->lru_next = NIL32;
                e->next_free = h->free_entry_head;
                h->free_entry_head = idx;
            }
            continue;
        }
        index_insert(s, idx);
        if (e->state == RF_OBJ_SEALED && !(e->flags & EF_FALLBACK)) lru_push_front(s, idx);
    }
    /* 4. holder records */
    recover_holders(s);
}

static int store_lock(rf_store *s) {
    int r = pthread_mutex_lock(&s->h->mutex);
    if (r == 0) return 0;
    if (r == EOWNERDEAD) {
        recover(s);
        s->h->lock_recoveries++;
        pthread_mutex_consistent(&s->h->mutex);
        wake_waiters(s);
        return 0;
    }
    errno = r;
    return RF_STORE_ESYS;
}

static inline void store_unlock(rf_store *s) { pthread_mutex_unlock(&s->h->mutex); }

/* ----------------------------------------------------------- spill I/O */

static int write_all(int fd, const uint8_t *p, uint64_t n) {
    while (n) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (uint64_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, uint64_t n) {
    while (n) {
        ssize_t r = read(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) {
            errno = EIO;
            return -1;
        }
        p += r;
        n -= (uint64_t)r;
    }
    return 0;
}

static int spill_write(const char *dir, const uint8_t *oid, const uint8_t *p, uint64_t n) {
    char path[SPILL_DIR_MAX + 64], tmp[SPILL_DIR_MAX + 96];
    spill_path(dir, oid, path, sizeof path);
    spill_tmp_path(dir, oid, (int32_t)getpid(), tmp, sizeof tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return RF_STORE_ESYS;
    if (write_all(fd, p, n) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return RF_STORE_ESYS;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return RF_STORE_ESYS;
    }
    return 0;
}

static int spill_read(const char *dir, const uint8_t *oid, uint8_t *p, uint64_t n) {
    char path[SPILL_DIR_MAX + 64];
    spill_path(dir, oid, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return RF_STORE_ESYS;
    int r = read_all(fd, p, n);
    int e = errno;
    close(fd);
    errno = e;
    return r < 0 ? RF_STORE_ESYS : 0;
}

/* Turn a sealed in-memory object that has a valid spill file into SPILLED. */
static void drop_to_spilled(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    lru_unlink(s, idx);
    if (e->block != NIL64) {
        heap_free(s, e->block);
        e->block = NIL64;
    }
    e->state = RF_OBJ_SPILLED;
    s->h->spills++;
    s->h->bytes_spilled += e->data_size + e->meta_size;
}

/* Undo what a restore or a spill of a dead process left half done. */
static void abandon_write(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    if (e->state == RF_OBJ_RESTORING) { /* its spill file still holds the object */
        heap_free(s, e->block);
        e->block = NIL64;
        e->state = RF_OBJ_SPILLED;
    }
    if (e->flags & EF_SPILLING) {
        char tmp[SPILL_DIR_MAX + 96];
        spill_tmp_path(s->h->spill_dir, e->oid, e->writer_pid, tmp, sizeof tmp);
        unlink(tmp);
        e->flags &= ~EF_SPILLING;
    }
}

/* Give back what process pid held (see rf_store_release_process); lock held. */
static void release_locked(rf_store *s, int32_t pid, uint64_t *pins_out, uint64_t *objects_out) {
    header_t *h = s->h;
    uint64_t pins = 0, objects = 0;
    for (uint32_t i = 0; i < h->entries_hwm; i++) {
        entry_t *e = &s->entries[i];
        if (e->state == RF_OBJ_FREE) continue;
        int64_t n = unpin_for(s, i, pid, 1);
        pins += (uint64_t)n;
        if (e->writer_pid == pid) {
            if (e->state == RF_OBJ_CREATED) {
                e->pins--; /* the writer's */
                do_delete(s, i);
                objects++;
                continue;
            }
            abandon_write(s, i);
        } else if (!n) {
            continue;
        }
        if (e->flags & EF_DELETE_PENDING) do_delete(s, i);
        else maybe_free(s, i);
    }
    h->pins_reclaimed += pins;
    h->objects_reclaimed += objects;
    wake_waiters(s); /* getters of an object that is gone now, or spilled again, look again */
    if (pins_out) *pins_out = pins;
    if (objects_out) *objects_out = objects;
}

/* A process this object's pins or half-done write belong to that has died, or 0.
 * alive[] caches the pids found alive in this sweep (one kill() per process). */
static int32_t dead_holder(rf_store *s, uint32_t idx, int32_t *alive, int *nalive, int max_alive) {
    entry_t *e = &s->entries[idx];
    int writing = e->state == RF_OBJ_CREATED || e->state == RF_OBJ_RESTORING || (e->flags & EF_SPILLING);
    for (uint32_t ref = e->holders;; ref = HOLDER(s, ref)->next) {
        int32_t pid = ref ? HOLDER(s, ref)->pid : (writing ? e->writer_pid : 0);
        if (pid > 0) {
            int known = 0;
            for (int k = 0; k < *nalive && !known; k++) known = alive[k] == pid;
            if (!known) {
                if (!pid_alive(pid)) return pid;
                if (*nalive < max_alive) alive[(*nalive)++] = pid;
            }
        }
        if (!ref) return 0;
    }
}

/* The store is full: give back what processes that died still hold although
 * nobody called rf_store_release_process for them (a process forked by a
 * worker, a driver the node could not watch). A pid is taken for dead only if
 * no process has it (a zombie counts as alive). Returns 1 if anything went. */
static int reclaim_dead(rf_store *s) {
    header_t *h = s->h;
    uint64_t before = h->pins_reclaimed + h->objects_reclaimed;
    int32_t alive[64];
    int nalive = 0;
    for (uint32_t i = 0; i < h->entries_hwm; i++) {
        int32_t pid;
        while (s->entries[i].state != RF_OBJ_FREE && (pid = dead_holder(s, i, alive, &nalive, 64)))
            release_locked(s, pid, NULL, NULL);
    }
    return h->pins_reclaimed + h->objects_reclaimed > before;
}

/* Find room for `need` bytes: allocate; else evict unreferenced objects LRU; else
 * spill sealed unpinned objects LRU; else reclaim what dead processes hold.
 * Called and returns with the lock held, but may drop it while writing a spill
 * file. */
static int alloc_room(rf_store *s, uint64_t need, uint64_t *off) {
    header_t *h = s->h;
    if (need > h->capacity) return RF_STORE_FULL;
    int swept = 0;
    for (int round = 0; round < 1 << 20; round++) {
        if (heap_alloc(s, need, off) == 0) return 0;
        uint32_t v;
        for (v = h->lru_tail; v != NIL32; v = s->entries[v].lru_prev) {
            entry_t *e = &s->entries[v];
            if (e->state == RF_OBJ_SEALED && e->pins <= 0 && e->refcount <= 0) break;
        }
        if (v != NIL32) {
            entry_t *e = &s->entries[v];
            h->evictions++;
            h->bytes_evicted += e->data_size + e->meta_size;
            free_entry(s, v);
            continue;
        }
        if (h->spill_dir[0]) {
            for (v = h->lru_tail; v != NIL32; v = s->entries[v].lru_prev) {
                entry_t *e = &s->entries[v];
                if (e->state == RF_OBJ_SEALED && e->pins <= 0 && !(e->flags & EF_SPILLING)) break;
            }
        }
        if (v == NIL32) { /* nothing to evict or spill: last, what dead processes hold */
            if (swept || !reclaim_dead(s)) return RF_STORE_FULL;
            swept = 1;
            continue;
        }
        entry_t *e = &s->entries[v];
        if (e->flags & EF_SPILL_FILE) { /* objects are immutable: the old file is still good */
            drop_to_spilled(s, v);
            continue;
        }
        int32_t self = (int32_t)getpid();
        pin_for(s, v, self);
        e->flags |= EF_SPILLING;
        e->writer_pid = self;
        uint8_t oid[RF_OID_SIZE];
        memcpy(oid, e->oid, RF_OID_SIZE);
        const uint8_t *p = PAYLOAD(s, e->block);
        uint64_t n = e->data_size + e->meta_size;
        store_unlock(s);
        int r = spill_write(h->spill_dir, oid, p, n);
        int err = errno;
        store_lock(s);
        e = &s->entries[v];
        e->flags &= ~EF_SPILLING;
        unpin_for(s, v, self, 0);
        if (r == 0) {
            e->flags |= EF_SPILL_FILE;
            if (e->pins == 0 && e->state == RF_OBJ_SEALED && e->refcount > 0 && !(e->flags & EF_DELETE_PENDING)) {
                drop_to_spilled(s, v);
                continue;
            }
        }
        maybe_free(s, v);
        if (r < 0) {
            errno = err;
            return RF_STORE_ESYS;
        }
    }
    return RF_STORE_FULL;
}

/* Map the pages of a large allocation into this process before it is written
 * (rf_map_in). Shared-memory pages stay mapped once faulted, so each process
 * maps a 2 MiB chunk of the data area once and remembers it: mapping is not
 * free even when every page is there already. A page unmapped since (reclaim,
 * a forked child's empty page tables before the pid check) only costs an
 * ordinary fault. */
#define PREFAULT_MIN (1u << 20)
#define PREFAULT_CHUNK (2ull << 20)
static void prefault(rf_store *s, uint64_t off, uint64_t n) {
    if (n < PREFAULT_MIN) return;
    uint64_t *done = s->prefaulted, cap = s->h->capacity;
    if (!done) { /* no memory for the bitmap: map every time */
        rf_map_in(s->data + off, n);
        return;
    }
    pid_t self = getpid();
    if (s->prefault_pid != self) {
        memset(done, 0, (cap / PREFAULT_CHUNK / 64 + 1) * sizeof *done);
        s->prefault_pid = self;
    }
    uint64_t c = off / PREFAULT_CHUNK, last = (off + n - 1) / PREFAULT_CHUNK;
    while (c <= last) {
        uint64_t from = c;
        /* claim the run of chunks not mapped yet (threads of one process may race:
         * at worst one takes ordinary faults) */
        while (c <= last && !(__atomic_fetch_or(&done[c / 64], 1ull << (c % 64), __ATOMIC_RELAXED) >> (c % 64) & 1))
            c++;
        if (c > from) {
            uint64_t end = c * PREFAULT_CHUNK < cap ? c * PREFAULT_CHUNK : cap;
            rf_map_in(s->data + from * PREFAULT_CHUNK, end - from * PREFAULT_CHUNK);
        }
        if (c == from) c++; /* already mapped */
    }
}

/* ------------------------------------------------------ fallback files */

/* Make the file of a new fallback object of n bytes and map it writable. The
 * blocks are reserved up front (fallocate, as Ray's fallback allocation does), so
 * a full disk is this error rather than a SIGBUS on a write into the mapping. */
static int fallback_create(rf_store *s, const uint8_t *oid, uint64_t n, uint8_t **out) {
    char path[FALLBACK_PATH_MAX];
    fallback_path(s, oid, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return RF_STORE_ESYS;
    int r = fallocate(fd, 0, 0, (off_t)n);
    if (r < 0 && errno == EOPNOTSUPP) r = ftruncate(fd, (off_t)n);
    void *p = r < 0 ? MAP_FAILED : mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (p == MAP_FAILED) {
        unlink(path);
        errno = err;
        return RF_STORE_ESYS;
    }
    *out = p;
    return 0;
}

/* This process's mapping of fallback object idx, or NULL. Lock held. A forked
 * child starts with none of its own: the parent's stay mapped under the views
 * it inherited, but their pins are not the child's. */
static fb_map_t *fb_find(rf_store *s, uint32_t idx) {
    pid_t self = getpid();
    if (s->fb_pid != self) {
        s->fb_n = 0;
        s->fb_pid = self;
    }
    for (uint32_t i = 0; i < s->fb_n; i++)
        if (s->fb_maps[i].idx == idx) return &s->fb_maps[i];
    return NULL;
}

static fb_map_t *fb_add(rf_store *s, uint32_t idx, uint8_t *ptr, uint64_t len) {
    if (s->fb_n == s->fb_cap) {
        uint32_t cap = s->fb_cap ? 2 * s->fb_cap : 8;
        fb_map_t *m = realloc(s->fb_maps, cap * sizeof *m);
        if (!m) return NULL;
        s->fb_maps = m;
        s->fb_cap = cap;
    }
    fb_map_t *m = &s->fb_maps[s->fb_n++];
    m->idx = idx;
    m->refs = 0;
    m->ptr = ptr;
    m->len = len;
    return m;
}

/* Take a reference to this process's mapping of fallback object idx for one of its
 * pins, mapping the file (read-only) on the first. Lock held. */
static int fb_ref(rf_store *s, uint32_t idx, const uint8_t **ptr_out) {
    fb_map_t *m = fb_find(s, idx);
    if (!m) {
        entry_t *e = &s->entries[idx];
        char path[FALLBACK_PATH_MAX];
        fallback_path(s, e->oid, path, sizeof path);
        uint64_t len = e->data_size + e->meta_size;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return RF_STORE_ESYS;
        void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
        int err = errno;
        close(fd);
        if (p == MAP_FAILED || !(m = fb_add(s, idx, p, len))) {
            if (p != MAP_FAILED) munmap(p, len);
            errno = p == MAP_FAILED ? err : ENOMEM;
            return RF_STORE_ESYS;
        }
    }
    m->refs++;
    if (ptr_out) *ptr_out = m->ptr;
    return 0;
}

/* Drop the reference of one of this process's pins on fallback object idx. Returns
 * the mapping for the caller to unmap once it has unlocked (tearing down a large
 * mapping is not free) when that was the last, else one with ptr NULL. Lock held. */
static fb_map_t fb_unref(rf_store *s, uint32_t idx) {
    fb_map_t none = {0}, *m = fb_find(s, idx);
    if (!m || --m->refs) return none;
    fb_map_t gone = *m;
    *m = s->fb_maps[--s->fb_n];
    return gone;
}

static inline void fb_unmap(fb_map_t m) {
    if (m.ptr) munmap(m.ptr, m.len);
}

/* --------------------------------------------------------- create/attach */

static int map_segment(rf_store *s, int fd, size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return RF_STORE_ESYS;
    s->base = p;
    s->size = size;
    s->h = (header_t *)p;
    return 0;
}

static void set_views(rf_store *s) {
    s->index = (uint32_t *)(s->base + s->h->index_off);
    s->entries = (entry_t *)(s->base + s->h->entries_off);
    s->holders = (holder_t *)(s->base + s->h->holders_off);
    s->prefaulted = calloc(s->h->capacity / PREFAULT_CHUNK / 64 + 1, sizeof *s->prefaulted);
    s->prefault_pid = getpid();
    s->fb_pid = getpid();
    s->data = s->base + s->h->data_off;
}

int rf_store_create_ex(const char *name, uint64_t capacity, const char *spill_dir, const char *fallback_dir,
                       uint64_t max_objects, rf_store **out) {
    if (!name || !out || name[0] != '/' || strlen(name) >= sizeof(((rf_store *)0)->name) || strchr(name + 1, '/'))
        return RF_STORE_EINVAL;
    if (capacity < 4096 || capacity > (1ull << 46)) return RF_STORE_EINVAL;
    if (spill_dir && strlen(spill_dir) >= SPILL_DIR_MAX - 1) return RF_STORE_EINVAL;
    if (fallback_dir && strlen(fallback_dir) >= SPILL_DIR_MAX - 1) return RF_STORE_EINVAL;
    capacity = round_up(capacity, RF_STORE_ALIGN);
    if (!max_objects) {
        max_objects = capacity / 4096;
        if (max_objects < 4096) max_objects = 4096;
        if (max_objects > (1u << 20)) max_objects = 1u << 20;
    }
    if (max_objects >= NIL32 / 4) return RF_STORE_EINVAL;
    uint64_t slots = 1;
    while (slots < 2 * max_objects) slots <<= 1;
    uint64_t index_off = HDR_SIZE;
    uint64_t entries_off = round_up(index_off + slots * sizeof(uint32_t), 64);
    uint64_t max_holders = 2 * max_objects;
    uint64_t holders_off = round_up(entries_off + max_objects * sizeof(entry_t), 64);
    uint64_t data_off = round_up(holders_off + max_holders * sizeof(holder_t), 4096);
    uint64_t seg = data_off + capacity;

    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) == 0) {
        uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        if (avail < seg) {
            errno = ENOSPC;
            return RF_STORE_ENOSHM;
        }
    }
    if (spill_dir && spill_dir[0]) {
        if (mkdir(spill_dir, 0700) < 0 && errno != EEXIST) return RF_STORE_ESYS;
    }
    if (fallback_dir && fallback_dir[0]) {
        if (mkdir(fallback_dir, 0700) < 0 && errno != EEXIST) return RF_STORE_ESYS;
    }
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return RF_STORE_ESYS;
    /* No posix_fallocate: on tmpfs it would commit (and zero) the whole
     * capacity in RAM up front, seconds for a store of several GiB. The
     * statvfs check above makes a full /dev/shm an error at create time. */
    if (ftruncate(fd, (off_t)seg) < 0) goto fail;
    rf_store *s = calloc(1, sizeof *s);
    if (!s) goto fail;
    if (map_segment(s, fd, seg) < 0) {
        free(s);
        goto fail;
    }
    s->fd = fd;
    snprintf(s->name, sizeof s->name, "%s", name);
    header_t *h = s->h;
    memset(h, 0, sizeof *h);
    h->version = STORE_VERSION;
    h->hdr_size = HDR_SIZE;
    h->segment_size = seg;
    h->capacity = capacity;
    h->index_off = index_off;
    h->index_slots = slots;
    h->entries_off = entries_off;
    h->max_entries = max_objects;
    h->holders_off = holders_off;
    h->max_holders = max_holders;
    h->data_off = data_off;
    if (spill_dir) snprintf(h->spill_dir, SPILL_DIR_MAX, "%s", spill_dir);
    if (fallback_dir) snprintf(h->fallback_dir, SPILL_DIR_MAX, "%s", fallback_dir);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&h->mutex, &ma);
    pthread_mutexattr_destroy(&ma);
    set_views(s);
    /* ftruncate gives zeroed pages: the index starts empty without touching it */
    h->entries_hwm = 0;
    h->free_entry_head = NIL32;
    h->lru_head = h->lru_tail = NIL32;
    for (int i = 0; i < NBINS; i++) h->bins[i] = NIL64;
    blk_t *b = BLK(s, 0);
    memset(b, 0, sizeof *b);
    b->size = capacity;
    b->is_free = 1;
    b->owner = NIL32;
    b->magic = BLK_MAGIC;
    bin_insert(s, 0);
    atomic_thread_fence(memory_order_seq_cst);
    __atomic_store_n(&h->magic, STORE_MAGIC, __ATOMIC_RELEASE);
    *out = s;
    return 0;
fail: {
    int e = errno;
    close(fd);
    shm_unlink(name);
    errno = e;
    return e == ENOSPC ? RF_STORE_ENOSHM : RF_STORE_ESYS;
}
}

int rf_store_create(const char *name, uint64_t capacity, const char *spill_dir, rf_store **out) {
    return rf_store_create_ex(name, capacity, spill_dir, NULL, 0, out);
}

int rf_store_attach(const char *name, rf_store **out) {
    if (!name || !out || strlen(name) >= sizeof(((rf_store *)0)->name)) return RF_STORE_EINVAL;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return RF_STORE_ESYS;
    struct stat st;
    rf_store *s = NULL;
    /* the creator may still be initialising: wait up to ~2 s for the magic */
    for (int tries = 0; tries < 2000; tries++) {
        if (fstat(fd, &st) < 0) goto fail;
        if ((uint64_t)st.st_size >= HDR_SIZE) {
            uint64_t magic = 0;
            if (pread(fd, &magic, sizeof magic, 0) == (ssize_t)sizeof magic && magic == STORE_MAGIC) break;
        }
        usleep(1000);
    }
    if ((uint64_t)st.st_size < HDR_SIZE) {
        close(fd);
        return RF_STORE_EBADSEG;
    }
    s = calloc(1, sizeof *s);
    if (!s) goto fail;
    if (map_segment(s, fd, (size_t)st.st_size) < 0) goto fail;
    if (__atomic_load_n(&s->h->magic, __ATOMIC_ACQUIRE) != STORE_MAGIC || s->h->version != STORE_VERSION ||
        s->h->segment_size != (uint64_t)st.st_size) {
        munmap(s->base, s->size);
        free(s);
        close(fd);
        return RF_STORE_EBADSEG;
    }
    s->fd = fd;
    snprintf(s->name, sizeof s->name, "%s", name);
    set_views(s);
    *out = s;
    return 0;
fail: {
    int e = errno;
    free(s);
    close(fd);
    errno = e;
    return RF_STORE_ESYS;
}
}

void rf_store_close(rf_store *s) {
    if (!s) return;
    if (s->base) munmap(s->base, s->size);
    if (s->fd >= 0) close(s->fd);
    for (uint32_t i = 0; i < s->fb_n; i++) munmap(s->fb_maps[i].ptr, s->fb_maps[i].len);
    free(s->fb_maps);
    free(s->prefaulted);
    free(s);
}

int rf_store_unlink(rf_store *s) {
    if (!s) return RF_STORE_EINVAL;
    int rc = 0;
    if (store_lock(s) == 0) {
        for (uint64_t i = 0; i < s->h->entries_hwm; i++)
            if (s->entries[i].state != RF_OBJ_FREE && (s->entries[i].flags & EF_FALLBACK))
                fallback_unlink(s, s->entries[i].oid);
        if (s->h->spill_dir[0]) {
            char path[SPILL_DIR_MAX + 64];
            for (uint64_t i = 0; i < s->h->max_entries; i++) {
                entry_t *e = &s->entries[i];
                if (e->state != RF_OBJ_FREE && (e->flags & EF_SPILL_FILE)) {
                    spill_path(s->h->spill_dir, e->oid, path, sizeof path);
                    unlink(path);
                    e->flags &= ~EF_SPILL_FILE;
                    if (e->state == RF_OBJ_SPILLED) { /* its data is gone now */
                        index_remove(s, (uint32_t)i);
                        e->state = RF_OBJ_DELETED;
                        maybe_free(s, (uint32_t)i);
                    }
                }
            }
        }
        store_unlock(s);
    }
    if (shm_unlink(s->name) < 0 && errno != ENOENT) rc = RF_STORE_ESYS;
    return rc;
}

const char *rf_store_name(const rf_store *s) { return s->name; }
uint64_t rf_store_capacity(const rf_store *s) { return s->h->capacity; }
const char *rf_store_spill_dir(const rf_store *s) { return s->h->spill_dir; }
const char *rf_store_fallback_dir(const rf_store *s) { return s->h->fallback_dir; }
uint64_t rf_store_max_object_size(const rf_store *s) { return s->h->capacity - RF_STORE_BLOCK_OVERHEAD; }

/* Fault in (allocate, zero and map) bytes [from, to) of the data area.
 * The first write into a never-touched page of the segment costs the kernel
 * an allocation and a zeroing: a put into cold memory runs at 1-2 GB/s,
 * into warm memory at memcpy speed. The allocator hands out low offsets
 * first (rf_store_heap_top only grows when nothing lower fits), so warming
 * just above the highest block in use (the node manager does it in the
 * background, ahead of the puts) makes large puts fast in every process;
 * they then take only minor faults. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
int rf_store_warm(rf_store *s, uint64_t from, uint64_t to) {
    if (!s) return RF_STORE_EINVAL;
    if (to > s->h->capacity) to = s->h->capacity;
    from &= ~(uint64_t)4095;
    const uint64_t chunk = 16u << 20;  /* in steps: one system call is not minutes long */
    for (uint64_t off = from; off < to; off += chunk) {
        uint64_t n = to - off < chunk ? to - off : chunk;
        if (madvise(s->data + off, (size_t)n, MADV_POPULATE_WRITE) < 0) return RF_STORE_ESYS;
    }
    return 0;
}

uint64_t rf_store_heap_top(const rf_store *s) { return __atomic_load_n(&s->h->heap_top, __ATOMIC_RELAXED); }

/* ---------------------------------------------------------- operations */

#define LOCK_OR_RETURN(s)                                                                                          \
    do {                                                                                                           \
        int _r = store_lock(s);                                                                                    \
        if (_r) return _r;                                                                                         \
    } while (0)

/* Make, outside the lock, the file of fallback object idx (its data read from its
 * spill file when from_spill) and this process's writable mapping of it, held for one
 * pin. Called and returns with the lock held; on failure nothing of the file is
 * left and errno says why. */
static int fallback_map_new(rf_store *s, uint32_t idx, int from_spill, uint8_t **ptr_out) {
    entry_t *e = &s->entries[idx];
    uint64_t n = e->data_size + e->meta_size;
    uint8_t oid[RF_OID_SIZE], *ptr = NULL;
    memcpy(oid, e->oid, RF_OID_SIZE);
    store_unlock(s);
    int r = fallback_create(s, oid, n, &ptr);
    if (r == 0 && from_spill && spill_read(s->h->spill_dir, oid, ptr, n) < 0) r = RF_STORE_ESYS;
    int err = errno;
    store_lock(s);
    fb_map_t *m = r == 0 ? fb_add(s, idx, ptr, n) : NULL;
    if (m) {
        m->refs = 1;
        *ptr_out = ptr;
        return 0;
    }
    if (r == 0) {
        err = ENOMEM;
        r = RF_STORE_ESYS;
    }
    if (ptr) {
        munmap(ptr, n);
        fallback_unlink(s, oid);
    }
    errno = err;
    return r;
}

/* rf_store_create_object of an object with a file of its own (larger than the data
 * area, or RF_STORE_FALLBACK_IF_FULL and no room), from the point where its CREATED
 * entry is in the index: its file is made without the lock (getters wait for the
 * seal meanwhile), and a failure aborts the object. Called with the lock held;
 * returns with it released. */
static int create_fallback(rf_store *s, uint32_t idx, uint32_t *idx_out, uint8_t **ptr_out) {
    int r = fallback_map_new(s, idx, 0, ptr_out); /* the mapping's pin: the writer's */
    if (r == 0) {
        store_unlock(s);
        *idx_out = idx;
        return 0;
    }
    int err = errno;
    s->entries[idx].pins--;
    do_delete(s, idx);
    wake_waiters(s);
    store_unlock(s);
    errno = err;
    return r;
}

int rf_store_create_object(rf_store *s, const uint8_t *oid, uint64_t data_size, uint64_t meta_size,
                           uint32_t *idx_out, uint8_t **ptr_out) {
    return rf_store_create_object_ex(s, oid, data_size, meta_size, 0, idx_out, ptr_out);
}

int rf_store_create_object_ex(rf_store *s, const uint8_t *oid, uint64_t data_size, uint64_t meta_size, int flags,
                              uint32_t *idx_out, uint8_t **ptr_out) {
    if (!s || !oid || !idx_out || !ptr_out) return RF_STORE_EINVAL;
    if (data_size > (1ull << 47) || meta_size > (1ull << 47)) return RF_STORE_FULL;
    uint64_t need = block_need(data_size + meta_size);
    int fallback = need > s->h->capacity; /* can never fit: a file of its own, if there is a directory */
    if (fallback && !s->h->fallback_dir[0]) return RF_STORE_FULL;
    uint64_t hash = oid_hash(oid);
    LOCK_OR_RETURN(s);
    if (index_find(s, oid, hash, NULL) != NIL32) {
        store_unlock(s);
        return RF_STORE_EXISTS;
    }
    uint32_t idx = entry_alloc(s);
    if (idx == NIL32) {
        store_unlock(s);
        return RF_STORE_TABLE_FULL;
    }
    entry_t *e = &s->entries[idx];
    memcpy(e->oid, oid, RF_OID_SIZE);
    e->hash = hash;
    e->state = RF_OBJ_CREATED;
    e->block = NIL64;
    e->data_size = data_size;
    e->meta_size = meta_size;
    e->refcount = 1;
    e->pins = 1; /* the writer's pin, dropped by seal/abort */
    e->writer_pid = (int32_t)getpid();
    e->flags = fallback ? EF_FALLBACK : 0;
    e->lru_prev = e->lru_next = NIL32;
    index_insert(s, idx);
    if (fallback) return create_fallback(s, idx, idx_out, ptr_out);
    uint64_t off;
    int r = alloc_room(s, need, &off);
    e = &s->entries[idx];
    if (r == RF_STORE_FULL && (flags & RF_STORE_FALLBACK_IF_FULL) && s->h->fallback_dir[0]) {
        e->flags |= EF_FALLBACK; /* what fills the store is all in use: a file of its own */
        return create_fallback(s, idx, idx_out, ptr_out);
    }
    if (r < 0) {
        int err = errno;
        free_entry(s, idx);
        wake_waiters(s);
        store_unlock(s);
        errno = err;
        return r;
    }
    blk_t *b = BLK(s, off);
    b->owner = idx;
    b->magic = BLK_MAGIC;
    e->block = off;
    store_unlock(s);
    prefault(s, off + RF_STORE_BLOCK_OVERHEAD, data_size + meta_size);
    *idx_out = idx;
    *ptr_out = PAYLOAD(s, off);
    return 0;
}

static int lookup_locked(rf_store *s, const uint8_t *oid, uint32_t *idx) {
    *idx = index_find(s, oid, oid_hash(oid), NULL);
    return *idx == NIL32 ? RF_STORE_NOTFOUND : 0;
}

/* End the write of a CREATED object, dropping the writer's pin: seal makes it
 * readable (it needs its block by then), abort deletes it. */
static int end_write(rf_store *s, const uint8_t *oid, int seal) {
    if (!s || !oid) return RF_STORE_EINVAL;
    uint32_t idx;
    fb_map_t unmap = {0};
    LOCK_OR_RETURN(s);
    int r = lookup_locked(s, oid, &idx);
    if (r == 0) {
        entry_t *e = &s->entries[idx];
        int fallback = (e->flags & EF_FALLBACK) != 0;
        if (e->state != RF_OBJ_CREATED || (seal && e->block == NIL64 && !fallback)) r = RF_STORE_ESTATE;
        else {
            e->pins--;
            if (fallback) unmap = fb_unref(s, idx);
            if (seal) {
                e->state = RF_OBJ_SEALED;
                if (!fallback) lru_push_front(s, idx); /* never evicted or spilled */
            }
            if (!seal || (e->flags & EF_DELETE_PENDING)) do_delete(s, idx);
            else maybe_free(s, idx);
            wake_waiters(s);
        }
    }
    store_unlock(s);
    fb_unmap(unmap);
    return r;
}

int rf_store_seal(rf_store *s, const uint8_t *oid) { return end_write(s, oid, 1); }

int rf_store_abort(rf_store *s, const uint8_t *oid) { return end_write(s, oid, 0); }

/* Back to SPILLED after a restore that failed (its pin dropped, waiters woken). */
static void restore_failed(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    e->state = RF_OBJ_SPILLED;
    unpin_for(s, idx, (int32_t)getpid(), 0);
    wake_waiters(s);
    if (e->flags & EF_DELETE_PENDING) do_delete(s, idx);
    else maybe_free(s, idx);
}

/* restore_locked when the data area has no room (what fills it is all in use):
 * into a fallback file of its own instead, as Ray's fallback allocation, rather
 * than failing a get of an object that exists. Lock held, released around the
 * file work; on success the caller's pin holds this process's mapping. */
static int restore_to_file(rf_store *s, uint32_t idx) {
    uint8_t *ptr;
    int r = fallback_map_new(s, idx, 1, &ptr);
    if (r < 0) {
        int err = errno;
        restore_failed(s, idx);
        errno = err;
        return r;
    }
    entry_t *e = &s->entries[idx];
    if (e->flags & EF_SPILL_FILE) { /* its data lives in its fallback file now */
        char path[SPILL_DIR_MAX + 64];
        spill_path(s->h->spill_dir, e->oid, path, sizeof path);
        unlink(path);
        e->flags &= ~EF_SPILL_FILE;
    }
    e->flags |= EF_FALLBACK;
    e->state = RF_OBJ_SEALED;
    s->h->restores++;
    s->h->bytes_restored += e->data_size + e->meta_size;
    wake_waiters(s);
    if (e->flags & EF_DELETE_PENDING) {
        fb_map_t gone = fb_unref(s, idx);
        unpin_for(s, idx, (int32_t)getpid(), 0);
        do_delete(s, idx);
        fb_unmap(gone);
        return RF_STORE_NOTFOUND;
    }
    return 0;
}

/* Restore a SPILLED object (lock held). On success the object is SEALED and pinned
 * once for the caller. */
static int restore_locked(rf_store *s, uint32_t idx) {
    entry_t *e = &s->entries[idx];
    int32_t self = (int32_t)getpid();
    e->state = RF_OBJ_RESTORING;
    e->writer_pid = self;
    pin_for(s, idx, self);
    uint64_t n = e->data_size + e->meta_size, off;
    int r = alloc_room(s, block_need(n), &off);
    e = &s->entries[idx];
    if (r == RF_STORE_FULL && s->h->fallback_dir[0]) return restore_to_file(s, idx);
    if (r < 0) {
        int err = errno;
        restore_failed(s, idx);
        errno = err;
        return r;
    }
    BLK(s, off)->owner = idx;
    e->block = off;
    uint8_t oid[RF_OID_SIZE];
    memcpy(oid, e->oid, RF_OID_SIZE);
    store_unlock(s);
    prefault(s, off + RF_STORE_BLOCK_OVERHEAD, n);
    r = spill_read(s->h->spill_dir, oid, PAYLOAD(s, off), n);
    int err = errno;
    store_lock(s);
    e = &s->entries[idx];
    if (r < 0) {
        heap_free(s, e->block);
        e->block = NIL64;
        restore_failed(s, idx);
        errno = err;
        return RF_STORE_ESYS;
    }
    e->state = RF_OBJ_SEALED;
    lru_push_front(s, idx);
    s->h->restores++;
    s->h->bytes_restored += n;
    wake_waiters(s);
    if (e->flags & EF_DELETE_PENDING) {
        unpin_for(s, idx, self, 0);
        do_delete(s, idx);
        return RF_STORE_NOTFOUND;
    }
    return 0;
}

int rf_store_get(rf_store *s, const uint8_t *oid, int64_t timeout_ns, uint32_t *idx_out, const uint8_t **ptr_out,
                 uint64_t *data_size_out, uint64_t *meta_size_out) {
    if (!s || !oid || !idx_out || !ptr_out) return RF_STORE_EINVAL;
    uint64_t hash = oid_hash(oid);
    int64_t deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0;
    for (;;) {
        LOCK_OR_RETURN(s);
        uint32_t idx = index_find(s, oid, hash, NULL);
        if (idx == NIL32) {
            store_unlock(s);
            return RF_STORE_NOTFOUND;
        }
        entry_t *e = &s->entries[idx];
        int restored = 0;
        if (e->state == RF_OBJ_SPILLED) {
            int r = restore_locked(s, idx);
            if (r < 0) {
                int err = errno;
                store_unlock(s);
                errno = err;
                return r;
            }
            e = &s->entries[idx];
            restored = 1; /* the restore already took the caller's pin */
        }
        if (e->state == RF_OBJ_SEALED) {
            const uint8_t *p;
            if (e->flags & EF_FALLBACK && restored) {
                p = fb_find(s, idx)->ptr; /* restore_to_file mapped it for the caller's pin */
            } else if (e->flags & EF_FALLBACK) {
                int r = fb_ref(s, idx, &p);
                if (r < 0) {
                    int err = errno;
                    store_unlock(s);
                    errno = err;
                    return r;
                }
            } else {
                lru_touch(s, idx);
                p = PAYLOAD(s, e->block);
            }
            if (!restored) pin_for(s, idx, (int32_t)getpid());
            *idx_out = idx;
            *ptr_out = p;
            if (data_size_out) *data_size_out = e->data_size;
            if (meta_size_out) *meta_size_out = e->meta_size;
            store_unlock(s);
            return 0;
        }
        /* CREATED or RESTORING: wait for a seal */
        if (timeout_ns == 0) {
            store_unlock(s);
            return RF_STORE_TIMEOUT;
        }
        uint32_t seq = atomic_load(&s->h->seal_seq);
        atomic_fetch_add(&s->h->waiters, 1);
        store_unlock(s);
        struct timespec ts, *tsp = NULL;
        if (timeout_ns > 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) {
                atomic_fetch_sub(&s->h->waiters, 1);
                return RF_STORE_TIMEOUT;
            }
            ts.tv_sec = left / 1000000000ll;
            ts.tv_nsec = left % 1000000000ll;
            tsp = &ts;
        }
        syscall(SYS_futex, &s->h->seal_seq, FUTEX_WAIT, seq, tsp, NULL, 0);
        atomic_fetch_sub(&s->h->waiters, 1);
    }
}

int rf_store_pin(rf_store *s, uint32_t idx) {
    if (!s || idx >= s->h->max_entries) return RF_STORE_EINVAL;
    LOCK_OR_RETURN(s);
    entry_t *e = &s->entries[idx];
    int r = e->state == RF_OBJ_FREE ? RF_STORE_NOTFOUND : 0;
    if (r == 0 && (e->flags & EF_FALLBACK)) r = fb_ref(s, idx, NULL);
    if (r == 0) pin_for(s, idx, (int32_t)getpid());
    store_unlock(s);
    return r;
}

int rf_store_unpin(rf_store *s, uint32_t idx) {
    if (!s || idx >= s->h->max_entries) return RF_STORE_EINVAL;
    LOCK_OR_RETURN(s);
    entry_t *e = &s->entries[idx];
    if (e->state == RF_OBJ_FREE || e->pins <= 0) {
        store_unlock(s);
        return RF_STORE_ESTATE;
    }
    fb_map_t unmap = {0};
    if (e->flags & EF_FALLBACK) unmap = fb_unref(s, idx);
    unpin_for(s, idx, (int32_t)getpid(), 0);
    if (e->pins == 0) maybe_free(s, idx);
    store_unlock(s);
    fb_unmap(unmap);
    return 0;
}

int rf_store_contains(rf_store *s, const uint8_t *oid) {
    if (!s || !oid) return RF_STORE_EINVAL;
    uint32_t idx;
    LOCK_OR_RETURN(s);
    int r = 0;
    if (lookup_locked(s, oid, &idx) == 0) {
        entry_t *e = &s->entries[idx];
        r = (e->state == RF_OBJ_SEALED || e->state == RF_OBJ_SPILLED || e->state == RF_OBJ_RESTORING) &&
            !(e->flags & EF_DELETE_PENDING);
    }
    store_unlock(s);
    return r;
}

int rf_store_size_of(rf_store *s, const uint8_t *oid, uint64_t *size_out) {
    if (!s || !oid || !size_out) return RF_STORE_EINVAL;
    uint32_t idx;
    LOCK_OR_RETURN(s);
    int r = lookup_locked(s, oid, &idx);
    if (r == 0) *size_out = s->entries[idx].data_size;
    store_unlock(s);
    return r;
}

int rf_store_incref(rf_store *s, const uint8_t *oid) {
    if (!s || !oid) return RF_STORE_EINVAL;
    uint32_t idx;
    LOCK_OR_RETURN(s);
    int r = lookup_locked(s, oid, &idx);
    if (r == 0) s->entries[idx].refcount++;
    store_unlock(s);
    return r;
}

int rf_store_release(rf_store *s, const uint8_t *oid) {
    if (!s || !oid) return RF_STORE_EINVAL;
    uint32_t idx;
    LOCK_OR_RETURN(s);
    int r = lookup_locked(s, oid, &idx);
    if (r == 0) {
        entry_t *e = &s->entries[idx];
        if (e->refcount <= 0) r = RF_STORE_ESTATE;
        else {
            e->refcount--;
            if (e->refcount == 0) maybe_free(s, idx);
        }
    }
    store_unlock(s);
    return r;
}

int rf_store_delete(rf_store *s, const uint8_t *oid) {
    if (!s || !oid) return RF_STORE_EINVAL;
    uint32_t idx;
    LOCK_OR_RETURN(s);
    int r = lookup_locked(s, oid, &idx);
    if (r == 0) {
        entry_t *e = &s->entries[idx];
        if (e->state == RF_OBJ_CREATED || e->state == RF_OBJ_RESTORING) e->flags |= EF_DELETE_PENDING;
        else do_delete(s, idx);
    }
    store_unlock(s);
    return r;
}

int rf_store_release_process(rf_store *s, int32_t pid, uint64_t *pins_out, uint64_t *objects_out) {
    if (!s || pid <= 0) return RF_STORE_EINVAL;
    LOCK_OR_RETURN(s);
    release_locked(s, pid, pins_out, objects_out);
    store_unlock(s);
    return 0;
}

int rf_store_list(rf_store *s, int32_t written_by, uint8_t *buf, uint64_t max, uint64_t *total) {
    if (!s) return RF_STORE_EINVAL;
    LOCK_OR_RETURN(s);
    uint64_t n = 0, t = 0;
    for (uint64_t i = 0; i < s->h->index_slots; i++) {
        uint32_t v = s->index[i];
        if (!v) continue;
        entry_t *e = &s->entries[v - 1];
        if (e->state != RF_OBJ_SEALED && e->state != RF_OBJ_SPILLED && e->state != RF_OBJ_RESTORING) continue;
        if (e->flags & EF_DELETE_PENDING) continue;
        if (written_by && (e->writer_pid != written_by || e->refcount <= 0)) continue;
        if (n < max && buf) memcpy(buf + n++ * RF_OID_SIZE, e->oid, RF_OID_SIZE);
        t++;
    }
    store_unlock(s);
    if (total) *total = t;
    return (int)n;
}

int rf_store_stats_get(rf_store *s, rf_store_stats *o) {
    if (!s || !o) return RF_STORE_EINVAL;
    memset(o, 0, sizeof *o);
    LOCK_OR_RETURN(s);
    header_t *h = s->h;
    o->capacity = h->capacity;
    o->bytes_used = h->bytes_used;
    o->bytes_free = h->capacity - h->bytes_used;
    o->num_objects = h->num_indexed;
    for (uint64_t i = 0; i < h->max_entries; i++) {
        entry_t *e = &s->entries[i];
        if (e->state == RF_OBJ_FREE) continue;
        if (e->pins > 0) o->num_pinned++;
        if (e->state == RF_OBJ_SEALED || e->state == RF_OBJ_SPILLED || e->state == RF_OBJ_RESTORING) o->num_sealed++;
        if (e->state == RF_OBJ_SPILLED) o->num_spilled++;
        if (e->flags & EF_FALLBACK) {
            o->num_fallback++;
            o->bytes_fallback += e->data_size + e->meta_size;
        }
    }
    o->evictions = h->evictions;
    o->bytes_evicted = h->bytes_evicted;
    o->spills = h->spills;
    o->bytes_spilled = h->bytes_spilled;
    o->restores = h->restores;
    o->bytes_restored = h->bytes_restored;
    o->largest_free_block = largest_free(s);
    o->lock_recoveries = h->lock_recoveries;
    o->max_objects = h->max_entries;
    o->pins_reclaimed = h->pins_reclaimed;
    o->objects_reclaimed = h->objects_reclaimed;
    store_unlock(s);
    return 0;
}

int rf_store_check(rf_store *s) {
    if (!s) return RF_STORE_EINVAL;
    LOCK_OR_RETURN(s);
    header_t *h = s->h;
    int bad = 0;
    uint64_t off = 0, prev = 0, used = 0, nfree_blocks = 0, nalloc = 0;
    int prev_free = 0;
#define BAD(n)                                                                                                     \
    do {                                                                                                           \
        bad = (n);                                                                                                 \
        goto out;                                                                                                  \
    } while (0)
    while (off < h->capacity) {
        blk_t *b = BLK(s, off);
        if (b->size < RF_STORE_BLOCK_OVERHEAD || b->size % RF_STORE_ALIGN || b->size > h->capacity - off) BAD(1);
        if (b->prev_size != prev) BAD(2);
        if (b->is_free && prev_free) BAD(3); /* not coalesced */
        if (!b->is_free) {
            if (b->owner >= h->max_entries) BAD(4);
            entry_t *e = &s->entries[b->owner];
            if (e->block != off) BAD(5);
            if (e->state == RF_OBJ_FREE || e->state == RF_OBJ_SPILLED) BAD(6);
            if (block_need(e->data_size + e->meta_size) > b->size) BAD(7);
            used += b->size;
            nalloc++;
        } else {
            nfree_blocks++;
        }
        prev_free = b->is_free;
        prev = b->size;
        off += b->size;
    }
    if (off != h->capacity) BAD(8);
    if (used != h->bytes_used) BAD(9);
    {
        uint64_t in_bins = 0;
        for (int i = 0; i < NBINS; i++) {
            if (((h->bin_bitmap >> i) & 1) != (h->bins[i] != NIL64)) BAD(10);
            uint64_t p = NIL64;
            for (uint64_t o = h->bins[i]; o != NIL64; o = BLK(s, o)->next_free) {
                blk_t *b = BLK(s, o);
                if (!b->is_free || bin_of(b->size) != i || b->prev_free != p) BAD(11);
                p = o;
                if (++in_bins > nfree_blocks) BAD(12);
            }
        }
        if (in_bins != nfree_blocks) BAD(13);
    }
    {
        uint64_t nidx = 0, nblk = 0;
        for (uint64_t i = 0; i < h->index_slots; i++) {
            uint32_t v = s->index[i];
            if (!v) continue;
            if (v - 1 >= h->max_entries) BAD(14);
            entry_t *e = &s->entries[v - 1];
            if (!(e->flags & EF_INDEXED) || e->state == RF_OBJ_FREE || e->state == RF_OBJ_DELETED) BAD(15);
            if (index_find(s, e->oid, e->hash, NULL) != v - 1) BAD(16);
            nidx++;
        }
        if (nidx != h->num_indexed) BAD(17);
        for (uint64_t i = 0; i < h->max_entries; i++) {
            entry_t *e = &s->entries[i];
            if (e->state == RF_OBJ_FREE) continue;
            if (e->block != NIL64) nblk++;
            int fallback = (e->flags & EF_FALLBACK) != 0;
            if (fallback && (e->block != NIL64 || (e->flags & (EF_IN_LRU | EF_SPILL_FILE)))) BAD(29);
            if (!fallback && (e->state == RF_OBJ_SPILLED) != (e->block == NIL64 && e->state != RF_OBJ_CREATED &&
                                                              e->state != RF_OBJ_RESTORING &&
                                                              e->state != RF_OBJ_DELETED))
                if (e->state == RF_OBJ_SPILLED || e->state == RF_OBJ_SEALED) BAD(18);
            if (e->pins < 0 || e->refcount < 0) BAD(19);
            if (e->state == RF_OBJ_SEALED && !fallback && !(e->flags & EF_IN_LRU)) BAD(20);
        }
        if (nblk != nalloc) BAD(21);
        uint64_t nl = 0;
        uint32_t p = NIL32;
        for (uint32_t v = h->lru_head; v != NIL32; v = s->entries[v].lru_next) {
            if (v >= h->max_entries || s->entries[v].lru_prev != p || !(s->entries[v].flags & EF_IN_LRU)) BAD(22);
            p = v;
            if (++nl > h->max_entries) BAD(23);
        }
        if (p != h->lru_tail) BAD(24);
    }
    {
        uint64_t nrec = 0;
        for (uint32_t i = 0; i < h->entries_hwm; i++) {
            entry_t *e = &s->entries[i];
            int64_t held = 0;
            for (uint32_t ref = e->holders; ref; ref = HOLDER(s, ref)->next) {
                if (ref > h->holders_hwm || HOLDER(s, ref)->count == 0 || ++nrec > h->holders_hwm) BAD(25);
                held += HOLDER(s, ref)->count;
            }
            if (held > e->pins) BAD(26);
        }
        for (uint32_t ref = h->free_holder_head; ref; ref = HOLDER(s, ref)->next)
            if (ref > h->holders_hwm || HOLDER(s, ref)->count != 0 || ++nrec > h->holders_hwm) BAD(27);
        if (nrec != h->holders_hwm) BAD(28);
    }
out:
    store_unlock(s);
#undef BAD
    return bad ? -100 - bad : 0;
}

int rf_store_debug_offset(rf_store *s, const uint8_t *oid, uint64_t *off_out, uint64_t *alloc_out) {
    uint32_t idx;
    LOCK_OR_RETURN(s);
    int r = lookup_locked(s, oid, &idx);
    if (r == 0) {
        entry_t *e = &s->entries[idx];
        if (e->block == NIL64) r = RF_STORE_ESTATE;
        else {
            *off_out = e->block + RF_STORE_BLOCK_OVERHEAD;
            if (alloc_out) *alloc_out = BLK(s, e->block)->size;
        }
    }
    store_unlock(s);
    return r;
}

void rf_store_debug_lock_forever(rf_store *s) { store_lock(s); }
