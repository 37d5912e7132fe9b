/*
 * powercut.c - test-only SQLite VFS that simulates a power cut.
 *
 * Model
 * -----
 * "powercut" wraps the unix VFS. Files opened as main db, -wal, rollback
 * journal or super-journal get an overlay: a sorted array of non-overlapping
 * dirty byte ranges (extents) plus an optional pending truncate. xWrite and
 * xTruncate only change the overlay; xRead reads the real file and applies the
 * overlay; xFileSize reports the logical size. xSync writes the overlay to the
 * real file (pending truncate first, then the extents in offset order) and
 * then calls the real xSync: from then on the data is "durable". A process
 * killed with SIGKILL loses the overlay: that is the power cut.
 *
 * The overlay is per file, not per handle: every handle of this process on
 * the same path (several connections, a read-only inspector, ...) shares one
 * node, like the OS page cache, so each connection sees the others' unsynced
 * writes (SQLite relies on that: the wal-index in -shm points at WAL frames
 * that may not be synced yet). For the same reason, when the last handle of a
 * file is closed the unsynced data is kept (close() does not fsync, but the
 * page cache still serves the data to the next open) until the process dies,
 * the file is deleted through this VFS, or a later xSync makes it durable.
 * The inode of such a closed file is pinned with an O_RDONLY descriptor so a
 * file deleted behind our back and re-created at the same path is detected.
 * BRUME_POWERCUT_DISCARD_ON_CLOSE=1 drops the data at last close instead.
 *
 * Everything else is passed through to the real VFS / real file: locks,
 * xCheckReservedLock, xFileControl (except SIZE_HINT, emulated, and
 * CHUNK_SIZE, recorded and passed on), xSectorSize, xDeviceCharacteristics,
 * the xShm* methods (the -shm file is not overlaid: SQLite rebuilds the
 * wal-index after a crash), xDelete (immediate and durable), xAccess (which
 * consults the overlay for SQLITE_ACCESS_EXISTS), xFullPathname, randomness,
 * sleep, time. Temp files (no name or DELETEONCLOSE) are passed through.
 * The io methods are version 2: no xFetch/xUnfetch, so the pager never
 * memory-maps a file behind the overlay's back.
 *
 * BRUME_POWERCUT_LEAK=p (0..1): each xWrite is, with probability p, also
 * written to the real file at once (a disk that persisted some unsynced
 * writes). BRUME_POWERCUT_SEED=n fixes the PRNG seed.
 *
 * Limits: directory operations (create, delete) are durable at once; a write
 * is lost or kept whole (no torn sectors); unsynced truncates never leak;
 * other processes do not see this process's unsynced data; mixing this VFS
 * and the plain unix VFS on the same file in one process is not supported.
 */
#define _POSIX_C_SOURCE 200809L

#include "brume_powercut.h"

#include <sqlite3.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef SQLITE_OPEN_SUPER_JOURNAL
#define SQLITE_OPEN_SUPER_JOURNAL 0x00004000
#endif

#define PC_OVERLAY_FLAGS \
    (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL | SQLITE_OPEN_SUPER_JOURNAL)

/* ------------------------------------------------------------------------ */
/* Data structures                                                           */

typedef struct PcExtent {
    sqlite3_int64 off;
    sqlite3_int64 len;
    unsigned char *data;
} PcExtent;

typedef struct PcNode {
    struct PcNode *next;    /* registry list; only nodes with linked != 0 */
    char *path;
    int nRef;               /* open handles (pc_mu) */
    int linked;             /* in the registry (pc_mu) */
    int pin;                /* O_RDONLY fd pinning the inode while nRef == 0, or -1 */
    int hasId;
    dev_t dev;
    ino_t ino;
    pthread_mutex_t mu;     /* guards everything below */
    PcExtent *a;
    int n, cap;
    sqlite3_int64 bytes;    /* sum of a[i].len */
    int hasTrunc;           /* a truncate is pending */
    sqlite3_int64 keep;     /* real bytes at offsets >= keep are dead (min of pending truncates) */
    sqlite3_int64 tsize;    /* size set by the last pending truncate */
    uint64_t rng;
} PcNode;

typedef struct PcFile {
    sqlite3_file base;
    sqlite3_file *real;     /* lives right after this struct */
    PcNode *node;           /* NULL: pass-through */
    int chunk;              /* SQLITE_FCNTL_CHUNK_SIZE of this handle */
} PcFile;

#define PC_ALIGN 16
#define PC_FILE_HDR ((sizeof(PcFile) + (PC_ALIGN - 1)) / PC_ALIGN * PC_ALIGN)

static pthread_mutex_t pc_mu = PTHREAD_MUTEX_INITIALIZER;
static sqlite3_vfs *pc_real;            /* the wrapped VFS */
static sqlite3_vfs pc_vfs;
static PcNode *pc_nodes;                /* registry, guarded by pc_mu */
static _Atomic unsigned long long pc_unsynced;
static _Atomic unsigned int pc_leak_ppm;  /* leak probability, parts per million */
static _Atomic int pc_discard_on_close;
static _Atomic unsigned long long pc_seed;
/* BRUME_FAULT_IOERR_FILE: while this file exists, writes and syncs of files whose path
 * contains "outbox.db" fail with SQLITE_IOERR_WRITE / SQLITE_IOERR_FSYNC (a failing SD card,
 * switched on and off by a test). Read once at registration. */
static char pc_ioerr_file[512];

static int pc_ioerr_now(PcNode *nd) {
    return pc_ioerr_file[0] && nd && nd->path && strstr(nd->path, "outbox.db") && access(pc_ioerr_file, F_OK) == 0;
}

/* ------------------------------------------------------------------------ */
/* PRNG                                                                      */

static uint64_t pc_splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t pc_next(uint64_t *s) { /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ------------------------------------------------------------------------ */
/* Overlay (node->mu held)                                                   */

static sqlite3_int64 ext_end(const PcExtent *e) { return e->off + e->len; }

/* first extent whose end is > o */
static int ext_first_end_after(const PcNode *nd, sqlite3_int64 o) {
    int lo = 0, hi = nd->n;
    while (lo < hi) {
        int m = lo + (hi - lo) / 2;
        if (ext_end(&nd->a[m]) > o) hi = m; else lo = m + 1;
    }
    return lo;
}

/* first extent whose start is >= o */
static int ext_first_off_from(const PcNode *nd, sqlite3_int64 o) {
    int lo = 0, hi = nd->n;
    while (lo < hi) {
        int m = lo + (hi - lo) / 2;
        if (nd->a[m].off >= o) hi = m; else lo = m + 1;
    }
    return lo;
}

static void pc_account(PcNode *nd, sqlite3_int64 delta) {
    nd->bytes += delta;
    if (delta >= 0) atomic_fetch_add(&pc_unsynced, (unsigned long long)delta);
    else atomic_fetch_sub(&pc_unsynced, (unsigned long long)(-delta));
}

static int overlay_write(PcNode *nd, const void *buf, sqlite3_int64 n, sqlite3_int64 o) {
    if (n <= 0) return SQLITE_OK;
    sqlite3_int64 e = o + n;
    int lo = ext_first_end_after(nd, o);
    int hi = ext_first_off_from(nd, e);   /* extents [lo, hi) overlap [o, e) */

    if (hi - lo == 1 && nd->a[lo].off <= o && ext_end(&nd->a[lo]) >= e) {
        memcpy(nd->a[lo].data + (o - nd->a[lo].off), buf, (size_t)n);
        return SQLITE_OK;
    }
    sqlite3_int64 s = o, f = e, old = 0;
    if (lo < hi) {
        if (nd->a[lo].off < s) s = nd->a[lo].off;
        if (ext_end(&nd->a[hi - 1]) > f) f = ext_end(&nd->a[hi - 1]);
    }
    if (lo == hi && nd->n == nd->cap) {
        int ncap = nd->cap ? nd->cap * 2 : 16;
        PcExtent *na = realloc(nd->a, (size_t)ncap * sizeof *na);
        if (!na) return SQLITE_IOERR_NOMEM;
        nd->a = na;
        nd->cap = ncap;
    }
    unsigned char *d = malloc((size_t)(f - s));
    if (!d) return SQLITE_IOERR_NOMEM;
    for (int i = lo; i < hi; i++) {
        memcpy(d + (nd->a[i].off - s), nd->a[i].data, (size_t)nd->a[i].len);
        old += nd->a[i].len;
        free(nd->a[i].data);
    }
    memcpy(d + (o - s), buf, (size_t)n);
    if (lo == hi) {
        memmove(nd->a + lo + 1, nd->a + lo, (size_t)(nd->n - lo) * sizeof *nd->a);
        nd->n++;
    } else if (hi - lo > 1) {
        memmove(nd->a + lo + 1, nd->a + hi, (size_t)(nd->n - hi) * sizeof *nd->a);
        nd->n -= hi - lo - 1;
    }
    nd->a[lo].off = s;
    nd->a[lo].len = f - s;
    nd->a[lo].data = d;
    pc_account(nd, (f - s) - old);
    return SQLITE_OK;
}

static void overlay_truncate(PcNode *nd, sqlite3_int64 sz) {
    int i = ext_first_end_after(nd, sz);
    if (i < nd->n && nd->a[i].off < sz) {           /* straddles sz: clip */
        sqlite3_int64 nl = sz - nd->a[i].off;
        pc_account(nd, nl - nd->a[i].len);
        nd->a[i].len = nl;
        i++;
    }
    for (int k = i; k < nd->n; k++) {
        pc_account(nd, -nd->a[k].len);
        free(nd->a[k].data);
    }
    nd->n = i;
    if (!nd->hasTrunc || sz < nd->keep) nd->keep = sz;
    nd->hasTrunc = 1;
    nd->tsize = sz;
}

static void overlay_clear(PcNode *nd) {
    for (int k = 0; k < nd->n; k++) free(nd->a[k].data);
    pc_account(nd, -nd->bytes);
    nd->n = 0;
    nd->hasTrunc = 0;
    nd->keep = nd->tsize = 0;
}

static int overlay_dirty(const PcNode *nd) { return nd->n > 0 || nd->hasTrunc; }

/* logical size given the real size (the real size is ignored when a truncate is pending) */
static sqlite3_int64 overlay_size(const PcNode *nd, sqlite3_int64 realSize) {
    sqlite3_int64 sz = nd->hasTrunc ? nd->tsize : realSize;
    if (nd->n > 0 && ext_end(&nd->a[nd->n - 1]) > sz) sz = ext_end(&nd->a[nd->n - 1]);
    return sz;
}

/* ------------------------------------------------------------------------ */
/* Registry (pc_mu held)                                                     */

static char *pc_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void registry_unlink(PcNode *nd) {
    if (!nd->linked) return;
    for (PcNode **pp = &pc_nodes; *pp; pp = &(*pp)->next) {
        if (*pp == nd) { *pp = nd->next; break; }
    }
    nd->next = NULL;
    nd->linked = 0;
}

static void node_free(PcNode *nd) {
    registry_unlink(nd);
    if (nd->pin >= 0) close(nd->pin);
    pthread_mutex_lock(&nd->mu);
    overlay_clear(nd);
    pthread_mutex_unlock(&nd->mu);
    pthread_mutex_destroy(&nd->mu);
    free(nd->a);
    free(nd->path);
    free(nd);
}

static PcNode *registry_find(const char *path) {
    for (PcNode *nd = pc_nodes; nd; nd = nd->next) {
        if (strcmp(nd->path, path) == 0) return nd;
    }
    return NULL;
}

static PcNode *node_new(const char *path, const struct stat *st) {
    PcNode *nd = calloc(1, sizeof *nd);
    if (!nd) return NULL;
    nd->path = pc_strdup(path);
    if (!nd->path || pthread_mutex_init(&nd->mu, NULL) != 0) {
        free(nd->path);
        free(nd);
        return NULL;
    }
    nd->pin = -1;
    if (st) {
        nd->hasId = 1;
        nd->dev = st->st_dev;
        nd->ino = st->st_ino;
    }
    uint64_t s = atomic_fetch_add(&pc_seed, 0x632BE59BD9B4E019ULL);
    nd->rng = pc_splitmix(&s) | 1;
    nd->next = pc_nodes;
    pc_nodes = nd;
    nd->linked = 1;
    return nd;
}

/* Finds or creates the node of an overlaid file that has just been opened. */
static PcNode *node_attach(const char *path) {
    struct stat st;
    int haveSt = stat(path, &st) == 0;
    pthread_mutex_lock(&pc_mu);
    PcNode *nd = registry_find(path);
    if (nd && haveSt && nd->hasId) {
        int same;
        if (nd->nRef == 0 && nd->pin >= 0) {
            struct stat ps;
            same = fstat(nd->pin, &ps) == 0 && ps.st_dev == st.st_dev && ps.st_ino == st.st_ino;
        } else {
            same = nd->dev == st.st_dev && nd->ino == st.st_ino;
        }
        if (!same) {                        /* replaced behind our back */
            if (nd->nRef == 0) node_free(nd); else registry_unlink(nd);
            nd = NULL;
        }
    }
    if (!nd) nd = node_new(path, haveSt ? &st : NULL);
    if (nd) {
        if (nd->nRef == 0 && nd->pin >= 0) {
            /* Our real handle is open and holds no lock yet: closing the pin
             * cannot drop any POSIX lock of this process. */
            close(nd->pin);
            nd->pin = -1;
        }
        nd->nRef++;
    }
    pthread_mutex_unlock(&pc_mu);
    return nd;
}

static void node_release(PcNode *nd) {
    pthread_mutex_lock(&pc_mu);
    if (--nd->nRef == 0) {
        int keep = nd->linked && overlay_dirty(nd) && !atomic_load(&pc_discard_on_close);
        if (keep) {
            /* All real handles are closed, so this process holds no POSIX
             * lock on the file: opening (and later closing) a pin is safe. */
            struct stat ps;
            nd->pin = open(nd->path, O_RDONLY | O_CLOEXEC);
            keep = nd->pin >= 0 && fstat(nd->pin, &ps) == 0 &&
                   (!nd->hasId || (ps.st_dev == nd->dev && ps.st_ino == nd->ino));
        }
        if (!keep) node_free(nd);
    }
    pthread_mutex_unlock(&pc_mu);
}

/* ------------------------------------------------------------------------ */
/* io methods                                                                */

#define REAL(f) (((PcFile *)(f))->real)
#define RM(f) (REAL(f)->pMethods)

static int pcClose(sqlite3_file *f) {
    PcFile *p = (PcFile *)f;
    int rc = p->real->pMethods ? p->real->pMethods->xClose(p->real) : SQLITE_OK;
    if (p->node) {
        node_release(p->node);
        p->node = NULL;
    }
    return rc;
}

static int pcRead(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off) {
    PcFile *p = (PcFile *)f;
    PcNode *nd = p->node;
    if (!nd) return RM(f)->xRead(REAL(f), buf, amt, off);

    unsigned char *b = buf;
    sqlite3_int64 end = off + amt;
    int rc = SQLITE_OK;
    pthread_mutex_lock(&nd->mu);
    if (nd->hasTrunc && off >= nd->keep) {
        memset(b, 0, (size_t)amt);
        rc = SQLITE_IOERR_SHORT_READ;
    } else {
        rc = RM(f)->xRead(REAL(f), b, amt, off);  /* zero-fills on short read */
        if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) goto out;
        if (nd->hasTrunc && end > nd->keep) {
            memset(b + (nd->keep - off), 0, (size_t)(end - nd->keep));
            rc = SQLITE_IOERR_SHORT_READ;
        }
    }
    for (int i = ext_first_end_after(nd, off); i < nd->n && nd->a[i].off < end; i++) {
        sqlite3_int64 s = nd->a[i].off > off ? nd->a[i].off : off;
        sqlite3_int64 e = ext_end(&nd->a[i]) < end ? ext_end(&nd->a[i]) : end;
        memcpy(b + (s - off), nd->a[i].data + (s - nd->a[i].off), (size_t)(e - s));
    }
    if (rc == SQLITE_IOERR_SHORT_READ) {
        /* the real file is too short (or cut): does the logical file cover the request? */
        sqlite3_int64 realSize = 0;
        if (!nd->hasTrunc) {
            int rc2 = RM(f)->xFileSize(REAL(f), &realSize);
            if (rc2 != SQLITE_OK) { rc = rc2; goto out; }
        }
        sqlite3_int64 lsize = overlay_size(nd, realSize);
        if (lsize >= end) {
            rc = SQLITE_OK;
        } else {
            sqlite3_int64 z = lsize > off ? lsize : off;
            memset(b + (z - off), 0, (size_t)(end - z));
        }
    }
out:
    pthread_mutex_unlock(&nd->mu);
    return rc;
}

static int pcWrite(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off) {
    PcFile *p = (PcFile *)f;
    PcNode *nd = p->node;
    if (!nd) return RM(f)->xWrite(REAL(f), buf, amt, off);
    if (pc_ioerr_now(nd)) return SQLITE_IOERR_WRITE;
    int rc = SQLITE_OK;
    pthread_mutex_lock(&nd->mu);
    unsigned int ppm = atomic_load(&pc_leak_ppm);
    if (ppm > 0 && (ppm >= 1000000u || pc_next(&nd->rng) % 1000000u < ppm)) {
        rc = RM(f)->xWrite(REAL(f), buf, amt, off);
    }
    if (rc == SQLITE_OK) rc = overlay_write(nd, buf, amt, off);
    pthread_mutex_unlock(&nd->mu);
    return rc;
}

static sqlite3_int64 pc_round_chunk(sqlite3_int64 sz, int chunk) {
    if (chunk > 0) sz = (sz + chunk - 1) / chunk * chunk;
    return sz;
}

static int pcTruncate(sqlite3_file *f, sqlite3_int64 size) {
    PcFile *p = (PcFile *)f;
    PcNode *nd = p->node;
    if (!nd) return RM(f)->xTruncate(REAL(f), size);
    pthread_mutex_lock(&nd->mu);
    overlay_truncate(nd, pc_round_chunk(size, p->chunk));  /* unixTruncate rounds the same way */
    pthread_mutex_unlock(&nd->mu);
    return SQLITE_OK;
}

/* Writes the overlay to the real file. node->mu held. */
static int overlay_flush(PcFile *p, PcNode *nd) {
    sqlite3_file *r = p->real;
    int rc;
    if (nd->hasTrunc) {
        rc = r->pMethods->xTruncate(r, nd->keep);
        if (rc != SQLITE_OK) return rc;
    }
    for (int i = 0; i < nd->n; i++) {
        sqlite3_int64 done = 0;
        while (done < nd->a[i].len) {
            sqlite3_int64 k = nd->a[i].len - done;
            if (k > (1 << 30)) k = 1 << 30;
            rc = r->pMethods->xWrite(r, nd->a[i].data + done, (int)k, nd->a[i].off + done);
            if (rc != SQLITE_OK) return rc;
            done += k;
        }
    }
    if (nd->hasTrunc) {
        sqlite3_int64 sz = 0;
        rc = r->pMethods->xFileSize(r, &sz);
        if (rc != SQLITE_OK) return rc;
        if (sz < nd->tsize) {
            rc = r->pMethods->xTruncate(r, nd->tsize);
            if (rc != SQLITE_OK) return rc;
        }
    }
    overlay_clear(nd);
    return SQLITE_OK;
}

static int pcSync(sqlite3_file *f, int flags) {
    PcFile *p = (PcFile *)f;
    PcNode *nd = p->node;
    if (!nd) return RM(f)->xSync(REAL(f), flags);
    if (pc_ioerr_now(nd)) return SQLITE_IOERR_FSYNC;
    pthread_mutex_lock(&nd->mu);
    int rc = overlay_flush(p, nd);
    if (rc == SQLITE_OK) rc = RM(f)->xSync(REAL(f), flags);
    pthread_mutex_unlock(&nd->mu);
    return rc;
}

static int pcFileSize(sqlite3_file *f, sqlite3_int64 *pSize) {
    PcFile *p = (PcFile *)f;
    PcNode *nd = p->node;
    if (!nd) return RM(f)->xFileSize(REAL(f), pSize);
    int rc = SQLITE_OK;
    sqlite3_int64 realSize = 0;
    pthread_mutex_lock(&nd->mu);
    if (!nd->hasTrunc) rc = RM(f)->xFileSize(REAL(f), &realSize);
    if (rc == SQLITE_OK) *pSize = overlay_size(nd, realSize);
    pthread_mutex_unlock(&nd->mu);
    return rc;
}

static int pcLock(sqlite3_file *f, int l) { return RM(f)->xLock(REAL(f), l); }
static int pcUnlock(sqlite3_file *f, int l) { return RM(f)->xUnlock(REAL(f), l); }
static int pcCheckReservedLock(sqlite3_file *f, int *pRes) { return RM(f)->xCheckReservedLock(REAL(f), pRes); }

static int pcFileControl(sqlite3_file *f, int op, void *arg) {
    PcFile *p = (PcFile *)f;
    PcNode *nd = p->node;
    if (nd && op == SQLITE_FCNTL_SIZE_HINT) {
        /* unix extends the real file (only with a chunk size, or to mmap it):
         * do the extension in the overlay so it is not durable before xSync. */
        if (p->chunk > 0) {
            sqlite3_int64 want = pc_round_chunk(*(sqlite3_int64 *)arg, p->chunk);
            sqlite3_int64 realSize = 0;
            int rc = SQLITE_OK;
            pthread_mutex_lock(&nd->mu);
            if (!nd->hasTrunc) rc = RM(f)->xFileSize(REAL(f), &realSize);
            if (rc == SQLITE_OK && overlay_size(nd, realSize) < want) overlay_truncate(nd, want);
            pthread_mutex_unlock(&nd->mu);
            return rc;
        }
        return SQLITE_OK;
    }
    if (op == SQLITE_FCNTL_CHUNK_SIZE) p->chunk = *(int *)arg;
    return RM(f)->xFileControl(REAL(f), op, arg);
}

static int pcSectorSize(sqlite3_file *f) { return RM(f)->xSectorSize(REAL(f)); }
static int pcDeviceCharacteristics(sqlite3_file *f) { return RM(f)->xDeviceCharacteristics(REAL(f)); }

static int pcShmMap(sqlite3_file *f, int iPg, int pgsz, int bExtend, void volatile **pp) {
    return RM(f)->xShmMap(REAL(f), iPg, pgsz, bExtend, pp);
}
static int pcShmLock(sqlite3_file *f, int offset, int n, int flags) {
    return RM(f)->xShmLock(REAL(f), offset, n, flags);
}
static void pcShmBarrier(sqlite3_file *f) { RM(f)->xShmBarrier(REAL(f)); }
static int pcShmUnmap(sqlite3_file *f, int deleteFlag) { return RM(f)->xShmUnmap(REAL(f), deleteFlag); }

static const sqlite3_io_methods pc_io = {
    2,                      /* no xFetch/xUnfetch: never mmap behind the overlay */
    pcClose,
    pcRead,
    pcWrite,
    pcTruncate,
    pcSync,
    pcFileSize,
    pcLock,
    pcUnlock,
    pcCheckReservedLock,
    pcFileControl,
    pcSectorSize,
    pcDeviceCharacteristics,
    pcShmMap,
    pcShmLock,
    pcShmBarrier,
    pcShmUnmap,
    NULL,
    NULL,
};

/* ------------------------------------------------------------------------ */
/* VFS methods                                                               */

static int pcOpen(sqlite3_vfs *vfs, const char *zName, sqlite3_file *f, int flags, int *pOutFlags) {
    (void)vfs;
    PcFile *p = (PcFile *)f;
    p->real = (sqlite3_file *)((char *)f + PC_FILE_HDR);
    p->node = NULL;
    p->chunk = 0;
    memset(p->real, 0, (size_t)pc_real->szOsFile);
    int rc = pc_real->xOpen(pc_real, zName, p->real, flags, pOutFlags);
    if (rc != SQLITE_OK) {
        if (p->real->pMethods) p->real->pMethods->xClose(p->real);
        p->base.pMethods = NULL;
        return rc;
    }
    if (zName && (flags & PC_OVERLAY_FLAGS) && !(flags & SQLITE_OPEN_DELETEONCLOSE)) {
        p->node = node_attach(zName);
        if (!p->node) {
            p->real->pMethods->xClose(p->real);
            p->base.pMethods = NULL;
            return SQLITE_NOMEM;
        }
    }
    p->base.pMethods = &pc_io;
    return SQLITE_OK;
}

static int pcDelete(sqlite3_vfs *vfs, const char *zPath, int syncDir) {
    (void)vfs;
    pthread_mutex_lock(&pc_mu);
    PcNode *nd = registry_find(zPath);
    if (nd) {
        if (nd->nRef == 0) node_free(nd);
        else registry_unlink(nd);   /* open handles keep the unlinked inode's data */
    }
    pthread_mutex_unlock(&pc_mu);
    return pc_real->xDelete(pc_real, zPath, syncDir);
}

static int pcAccess(sqlite3_vfs *vfs, const char *zPath, int flags, int *pResOut) {
    (void)vfs;
    int rc = pc_real->xAccess(pc_real, zPath, flags, pResOut);
    if (rc != SQLITE_OK || flags != SQLITE_ACCESS_EXISTS) return rc;
    /* unix: EXISTS means "exists and, if a regular file, is not empty":
     * answer with the logical size when the overlay changed it. */
    pthread_mutex_lock(&pc_mu);
    PcNode *nd = registry_find(zPath);
    if (nd) {
        pthread_mutex_lock(&nd->mu);
        if (nd->hasTrunc) {
            *pResOut = overlay_size(nd, 0) > 0;
        } else if (!*pResOut && nd->n > 0) {
            *pResOut = 1;
        }
        pthread_mutex_unlock(&nd->mu);
    }
    pthread_mutex_unlock(&pc_mu);
    return rc;
}

static int pcFullPathname(sqlite3_vfs *vfs, const char *zName, int nOut, char *zOut) {
    (void)vfs;
    return pc_real->xFullPathname(pc_real, zName, nOut, zOut);
}
static void *pcDlOpen(sqlite3_vfs *vfs, const char *zFilename) {
    (void)vfs;
    return pc_real->xDlOpen(pc_real, zFilename);
}
static void pcDlError(sqlite3_vfs *vfs, int nByte, char *zErrMsg) {
    (void)vfs;
    pc_real->xDlError(pc_real, nByte, zErrMsg);
}
static void (*pcDlSym(sqlite3_vfs *vfs, void *h, const char *zSym))(void) {
    (void)vfs;
    return pc_real->xDlSym(pc_real, h, zSym);
}
static void pcDlClose(sqlite3_vfs *vfs, void *h) {
    (void)vfs;
    pc_real->xDlClose(pc_real, h);
}
static int pcRandomness(sqlite3_vfs *vfs, int nByte, char *zOut) {
    (void)vfs;
    return pc_real->xRandomness(pc_real, nByte, zOut);
}
static int pcSleep(sqlite3_vfs *vfs, int micro) {
    (void)vfs;
    return pc_real->xSleep(pc_real, micro);
}
static int pcCurrentTime(sqlite3_vfs *vfs, double *pOut) {
    (void)vfs;
    return pc_real->xCurrentTime(pc_real, pOut);
}
static int pcGetLastError(sqlite3_vfs *vfs, int n, char *z) {
    (void)vfs;
    return pc_real->xGetLastError ? pc_real->xGetLastError(pc_real, n, z) : 0;
}
static int pcCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *pOut) {
    (void)vfs;
    return pc_real->xCurrentTimeInt64(pc_real, pOut);
}
static int pcSetSystemCall(sqlite3_vfs *vfs, const char *zName, sqlite3_syscall_ptr fn) {
    (void)vfs;
    return pc_real->xSetSystemCall(pc_real, zName, fn);
}
static sqlite3_syscall_ptr pcGetSystemCall(sqlite3_vfs *vfs, const char *zName) {
    (void)vfs;
    return pc_real->xGetSystemCall(pc_real, zName);
}
static const char *pcNextSystemCall(sqlite3_vfs *vfs, const char *zName) {
    (void)vfs;
    return pc_real->xNextSystemCall(pc_real, zName);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */

static void pc_read_env(void) {
    const char *s = getenv("BRUME_POWERCUT_LEAK");
    double prob = s ? strtod(s, NULL) : 0.0;
    if (!(prob > 0.0)) prob = 0.0;      /* also catches NaN */
    if (prob > 1.0) prob = 1.0;
    atomic_store(&pc_leak_ppm, (unsigned int)(prob * 1000000.0 + 0.5));

    s = getenv("BRUME_POWERCUT_DISCARD_ON_CLOSE");
    atomic_store(&pc_discard_on_close, s && *s && strcmp(s, "0") != 0);

    s = getenv("BRUME_FAULT_IOERR_FILE");
    pc_ioerr_file[0] = 0;
    if (s && strlen(s) < sizeof pc_ioerr_file) strcpy(pc_ioerr_file, s);

    s = getenv("BRUME_POWERCUT_SEED");
    uint64_t seed;
    if (s && *s) {
        seed = strtoull(s, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)ts.tv_nsec << 16);
    }
    atomic_store(&pc_seed, seed);
}

int brume_powercut_register(int make_default) {
    int rc;
    pthread_mutex_lock(&pc_mu);
    if (!pc_real) {
        sqlite3_vfs *r = sqlite3_vfs_find("unix");
        if (!r) r = sqlite3_vfs_find(NULL);
        if (!r || r == &pc_vfs) {
            pthread_mutex_unlock(&pc_mu);
            return SQLITE_ERROR;
        }
        pc_real = r;
        memset(&pc_vfs, 0, sizeof pc_vfs);
        pc_vfs.iVersion = r->iVersion < 3 ? r->iVersion : 3;
        pc_vfs.szOsFile = (int)PC_FILE_HDR + r->szOsFile;
        pc_vfs.mxPathname = r->mxPathname;
        pc_vfs.zName = "powercut";
        pc_vfs.xOpen = pcOpen;
        pc_vfs.xDelete = pcDelete;
        pc_vfs.xAccess = pcAccess;
        pc_vfs.xFullPathname = pcFullPathname;
        pc_vfs.xDlOpen = r->xDlOpen ? pcDlOpen : NULL;
        pc_vfs.xDlError = r->xDlError ? pcDlError : NULL;
        pc_vfs.xDlSym = r->xDlSym ? pcDlSym : NULL;
        pc_vfs.xDlClose = r->xDlClose ? pcDlClose : NULL;
        pc_vfs.xRandomness = pcRandomness;
        pc_vfs.xSleep = pcSleep;
        pc_vfs.xCurrentTime = pcCurrentTime;
        pc_vfs.xGetLastError = pcGetLastError;
        if (pc_vfs.iVersion >= 2) pc_vfs.xCurrentTimeInt64 = r->xCurrentTimeInt64 ? pcCurrentTimeInt64 : NULL;
        if (pc_vfs.iVersion >= 3) {
            pc_vfs.xSetSystemCall = r->xSetSystemCall ? pcSetSystemCall : NULL;
            pc_vfs.xGetSystemCall = r->xGetSystemCall ? pcGetSystemCall : NULL;
            pc_vfs.xNextSystemCall = r->xNextSystemCall ? pcNextSystemCall : NULL;
        }
    }
    pc_read_env();
    rc = sqlite3_vfs_register(&pc_vfs, make_default);
    pthread_mutex_unlock(&pc_mu);
    return rc;
}

unsigned long long brume_powercut_unsynced_bytes(void) {
    return atomic_load(&pc_unsynced);
}
