/* deps.c -- see deps.h.
 *
 * Two tables: objects (20-byte id -> ready flag + list of waiting tasks) and
 * tasks (8-byte handle -> task record). A task record lists the deps it still
 * lacks; an object's waiter list holds task record pointers in add order, so
 * releasing in add order needs no sort. Records are malloc'd and never move,
 * unlike idtable slots. */
#include "deps.h"

#include <stdlib.h>
#include <string.h>

#define OBJ_READY 1u

typedef struct dep_task {
    int64_t handle;
    size_t nmissing;
    uint8_t *missing; /* nmissing ids, packed, in the order given */
    size_t cap;       /* ids allocated in missing */
} dep_task;

/* Waiters of one object; lives in the object's rf_idval.ptr. */
typedef struct waiters {
    size_t len, cap;
    dep_task *tasks[];
} waiters;

struct rf_deps {
    rf_idtable *objects; /* val: flags = OBJ_READY, ptr = waiters * or NULL */
    rf_idtable *tasks;   /* val: ptr = dep_task * */
    int64_t *released;   /* scratch returned by mark_ready */
    size_t released_cap;
    size_t ready_objects, waited_objects;
    uint64_t added_total, released_total, removed_total;
};

rf_deps *rf_deps_new(void) {
    rf_deps *d = calloc(1, sizeof(*d));
    if (!d) return NULL;
    d->objects = rf_idtable_new(RF_DEPS_ID_SIZE);
    d->tasks = rf_idtable_new(sizeof(int64_t));
    if (!d->objects || !d->tasks) {
        rf_idtable_free(d->objects);
        rf_idtable_free(d->tasks);
        free(d);
        return NULL;
    }
    return d;
}

static void task_free(dep_task *t) {
    if (!t) return;
    free(t->missing);
    free(t);
}

void rf_deps_free(rf_deps *d) {
    if (!d) return;
    size_t pos = 0;
    rf_idval *v;
    while (rf_idtable_next(d->tasks, &pos, NULL, &v)) task_free(v->ptr);
    pos = 0;
    while (rf_idtable_next(d->objects, &pos, NULL, &v)) free(v->ptr);
    rf_idtable_free(d->tasks);
    rf_idtable_free(d->objects);
    free(d->released);
    free(d);
}

/* Handles as table keys: fixed little-endian bytes. */
static void handle_key(int64_t handle, uint8_t key[8]) {
    uint64_t u = (uint64_t)handle;
    for (int i = 0; i < 8; i++) key[i] = (uint8_t)(u >> (8 * i));
}

static dep_task *find_task(const rf_deps *d, int64_t handle) {
    uint8_t key[8];
    handle_key(handle, key);
    rf_idval *v = rf_idtable_find(d->tasks, key);
    return v ? v->ptr : NULL;
}

/* Drop t from the waiter list of oid; delete the object entry if it is then
 * neither ready nor waited on. Keeps the remaining waiters in order. */
static void unlink_waiter(rf_deps *d, const uint8_t *oid, dep_task *t) {
    rf_idval *v = rf_idtable_find(d->objects, oid);
    if (!v || !v->ptr) return;
    waiters *w = v->ptr;
    for (size_t i = 0; i < w->len; i++) {
        if (w->tasks[i] != t) continue;
        memmove(&w->tasks[i], &w->tasks[i + 1], (w->len - i - 1) * sizeof(dep_task *));
        w->len--;
        break;
    }
    if (w->len) return;
    free(w);
    v->ptr = NULL;
    d->waited_objects--;
    if (!(v->flags & OBJ_READY)) rf_idtable_delete(d->objects, oid, NULL);
}

/* Undo a partly or fully linked task (used by remove and by add's error path). */
static void unlink_task(rf_deps *d, dep_task *t) {
    for (size_t i = 0; i < t->nmissing; i++)
        unlink_waiter(d, t->missing + i * RF_DEPS_ID_SIZE, t);
}

/* Append t to oid's waiters, unless it is already last there (a duplicate
 * dep in this add: the same task is always appended last). Returns 1 if
 * appended, 0 if duplicate, RF_ENOMEM. */
static int link_waiter(rf_deps *d, rf_idval *v, dep_task *t) {
    waiters *w = v->ptr;
    if (w && w->len && w->tasks[w->len - 1] == t) return 0;
    if (!w || w->len == w->cap) {
        size_t ncap = w ? w->cap * 2 : 2;
        waiters *nw = realloc(w, sizeof(waiters) + ncap * sizeof(dep_task *));
        if (!nw) return RF_ENOMEM;
        if (!w) {
            nw->len = 0;
            d->waited_objects++;
        }
        nw->cap = ncap;
        v->ptr = w = nw;
    }
    w->tasks[w->len++] = t;
    return 1;
}

int rf_deps_add_task(rf_deps *d, int64_t handle, const uint8_t *ids, size_t n, size_t *missing) {
    *missing = 0;
    if (n && !ids) return RF_EINVAL;
    if (find_task(d, handle)) return RF_EEXIST;

    dep_task *t = calloc(1, sizeof(*t));
    if (!t) return RF_ENOMEM;
    t->handle = handle;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *oid = ids + i * RF_DEPS_ID_SIZE;
        rf_idval *v;
        if (rf_idtable_upsert(d->objects, oid, &v) < 0) goto fail;
        if (v->flags & OBJ_READY) continue;
        /* Reserve the task-side slot first so linking cannot leave the two
         * sides disagreeing. */
        if (t->nmissing == t->cap) {
            size_t ncap = t->cap ? t->cap * 2 : 4;
            uint8_t *nm = realloc(t->missing, ncap * RF_DEPS_ID_SIZE);
            if (!nm) goto fail_obj;
            t->missing = nm;
            t->cap = ncap;
        }
        int rc = link_waiter(d, v, t);
        if (rc < 0) goto fail_obj;
        if (rc == 0) continue; /* duplicate */
        memcpy(t->missing + t->nmissing * RF_DEPS_ID_SIZE, oid, RF_DEPS_ID_SIZE);
        t->nmissing++;
        continue;
    fail_obj:
        /* An entry created just now for this dep, but never linked, must go. */
        if (!v->ptr && !(v->flags & OBJ_READY)) rf_idtable_delete(d->objects, oid, NULL);
        goto fail;
    }
    if (t->nmissing == 0) {
        task_free(t);
        return RF_OK;
    }
    uint8_t key[8];
    rf_idval *tv;
    handle_key(handle, key);
    if (rf_idtable_upsert(d->tasks, key, &tv) < 0) goto fail;
    tv->ptr = t;
    d->added_total++;
    *missing = t->nmissing;
    return RF_OK;

fail:
    unlink_task(d, t);
    task_free(t);
    return RF_ENOMEM;
}

/* Remove oid from t's missing list, keeping the order of the rest. */
static void task_drop_missing(dep_task *t, const uint8_t *oid) {
    for (size_t i = 0; i < t->nmissing; i++) {
        uint8_t *p = t->missing + i * RF_DEPS_ID_SIZE;
        if (memcmp(p, oid, RF_DEPS_ID_SIZE) != 0) continue;
        memmove(p, p + RF_DEPS_ID_SIZE, (t->nmissing - i - 1) * RF_DEPS_ID_SIZE);
        t->nmissing--;
        return;
    }
}

static void delete_task_entry(rf_deps *d, dep_task *t) {
    uint8_t key[8];
    handle_key(t->handle, key);
    rf_idtable_delete(d->tasks, key, NULL);
    task_free(t);
}

int rf_deps_mark_ready(rf_deps *d, const uint8_t *oid, const int64_t **released, size_t *n) {
    *n = 0;
    *released = d->released;
    rf_idval *v;
    int rc = rf_idtable_upsert(d->objects, oid, &v);
    if (rc < 0) return rc;
    if (v->flags & OBJ_READY) return RF_OK;
    waiters *w = v->ptr;
    /* Size the output before changing anything, so failure leaves no trace. */
    if (w && w->len > d->released_cap) {
        int64_t *nr = realloc(d->released, w->len * sizeof(int64_t));
        if (!nr) {
            if (rc == 1) rf_idtable_delete(d->objects, oid, NULL);
            return RF_ENOMEM;
        }
        d->released = nr;
        d->released_cap = w->len;
    }
    v->flags |= OBJ_READY;
    v->ptr = NULL;
    d->ready_objects++;
    if (!w) return RF_OK;
    d->waited_objects--;
    /* Only the tasks table changes below, so w (already detached) is safe. */
    size_t k = 0;
    for (size_t i = 0; i < w->len; i++) {
        dep_task *t = w->tasks[i];
        task_drop_missing(t, oid);
        if (t->nmissing) continue;
        d->released[k++] = t->handle;
        delete_task_entry(d, t);
    }
    free(w);
    d->released_total += k;
    *released = d->released;
    *n = k;
    return RF_OK;
}

void rf_deps_mark_missing(rf_deps *d, const uint8_t *oid) {
    rf_idval *v = rf_idtable_find(d->objects, oid);
    if (!v || !(v->flags & OBJ_READY)) return;
    /* A ready object has no waiters, so the entry can simply go. */
    d->ready_objects--;
    rf_idtable_delete(d->objects, oid, NULL);
}

int rf_deps_is_ready(const rf_deps *d, const uint8_t *oid) {
    rf_idval *v = rf_idtable_find(d->objects, oid);
    return v && (v->flags & OBJ_READY);
}

int rf_deps_remove_task(rf_deps *d, int64_t handle) {
    dep_task *t = find_task(d, handle);
    if (!t) return RF_ENOTFOUND;
    unlink_task(d, t);
    delete_task_entry(d, t);
    d->removed_total++;
    return RF_OK;
}

int rf_deps_missing(const rf_deps *d, int64_t handle, const uint8_t **ids, size_t *n) {
    dep_task *t = find_task(d, handle);
    if (!t) return RF_ENOTFOUND;
    *ids = t->missing;
    *n = t->nmissing;
    return RF_OK;
}

size_t rf_deps_waiting(const rf_deps *d) { return rf_idtable_len(d->tasks); }

void rf_deps_get_stats(const rf_deps *d, rf_deps_stats *out) {
    out->waiting_tasks = rf_idtable_len(d->tasks);
    out->ready_objects = d->ready_objects;
    out->waited_objects = d->waited_objects;
    out->added_total = d->added_total;
    out->released_total = d->released_total;
    out->removed_total = d->removed_total;
}
