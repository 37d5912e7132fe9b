/*
 * powercut_selftest.c - standalone check of Sources/CPowerCut (the "powercut"
 * SQLite VFS). Not part of any Swift target; built and run by run.sh.
 *
 *   usage: powercut_selftest [random-cuts-per-series (50)] [seed]
 *
 * 1. File-level model check (in a child): random writes / truncates / reads /
 *    syncs / reopens through the VFS against an in-memory reference; after the
 *    last handle is closed without sync the real file must hold exactly the
 *    last synced image; inode-replacement and discard-on-close checks.
 * 2. Deterministic cuts: a child commits with synchronous NORMAL / FULL,
 *    checkpoints, closes, ... then SIGKILLs itself; the parent reopens the
 *    database with the plain unix VFS and checks integrity_check and the rows.
 * 3. Random cuts: series of children (WAL, leak 0 and leak 0.5; rollback
 *    journals) that kill themselves after a random number of transactions,
 *    reporting over a pipe what is durable (FULL commit, complete checkpoint)
 *    and what is committed.
 */
#define _POSIX_C_SOURCE 200809L

#include "brume_powercut.h"

#include <sqlite3.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */

static uint64_t rng_state;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static int rndn(int n) { return (int)(rnd() % (uint64_t)n); }

static char g_dir[512];

/* Child -> parent records. */
typedef struct Rec {
    int kind;                 /* 0 progress, 1 error */
    long long durable;        /* rows that must survive the cut */
    long long upper;          /* without leaks, at most this many survive (last event that may have synced) */
    long long committed;      /* rows committed so far */
    char msg[200];
} Rec;

static int g_pipe = -1;

static void send_rec3(int kind, long long durable, long long upper, long long committed, const char *msg) {
    Rec r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    r.durable = durable;
    r.upper = upper;
    r.committed = committed;
    if (msg) snprintf(r.msg, sizeof r.msg, "%s", msg);
    ssize_t w = write(g_pipe, &r, sizeof r);
    (void)w;
}

static void send_rec(int kind, long long durable, long long committed, const char *msg) {
    send_rec3(kind, durable, durable, committed, msg);
}

static void child_fail(const char *fmt, ...) {
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    send_rec(1, 0, 0, buf);
    _exit(3);
}

static void cut(void) {
    kill(getpid(), SIGKILL);
    for (;;) pause();
}

static void xexec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        child_fail("%s: %s", sql, err ? err : "?");
    }
}

static long long q1(sqlite3 *db, const char *sql, int *ok) {
    sqlite3_stmt *st = NULL;
    long long v = -1;
    *ok = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
        *ok = 1;
    }
    sqlite3_finalize(st);
    return v;
}

static long long cq1(sqlite3 *db, const char *sql) {
    int ok;
    long long v = q1(db, sql, &ok);
    if (!ok) child_fail("%s: %s", sql, sqlite3_errmsg(db));
    return v;
}

static sqlite3 *copen(const char *path, int flags) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        child_fail("open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

#define RW (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
#define RO (SQLITE_OPEN_READONLY)

static void child_register(const char *leak, int discard) {
    char sb[32];
    snprintf(sb, sizeof sb, "%llu", (unsigned long long)rng_state);
    setenv("BRUME_POWERCUT_SEED", sb, 1);   /* reproducible leaks for a given test seed */
    if (leak) setenv("BRUME_POWERCUT_LEAK", leak, 1); else unsetenv("BRUME_POWERCUT_LEAK");
    if (discard) setenv("BRUME_POWERCUT_DISCARD_ON_CLOSE", "1", 1); else unsetenv("BRUME_POWERCUT_DISCARD_ON_CLOSE");
    if (brume_powercut_register(1) != SQLITE_OK) child_fail("register failed");
    sqlite3_vfs *v = sqlite3_vfs_find(NULL);
    if (!v || strcmp(v->zName, "powercut") != 0) child_fail("powercut is not the default VFS");
}

/* one transaction of `rows` rows; returns the new committed count */
static long long insert_tx(sqlite3 *db, long long committed, int rows) {
    char sql[200];
    xexec(db, "BEGIN IMMEDIATE");
    for (int r = 0; r < rows; r++) {
        snprintf(sql, sizeof sql, "INSERT INTO t(i, pad) VALUES(%lld, randomblob(%d))",
                 committed + r + 1, rndn(5000));
        xexec(db, sql);
    }
    if (committed > 0 && rndn(3) == 0) {   /* rewrite an old page too */
        snprintf(sql, sizeof sql, "UPDATE t SET pad = randomblob(%d) WHERE i = %lld",
                 rndn(3000), 1 + (long long)rndn((int)committed));
        xexec(db, sql);
    }
    xexec(db, "COMMIT");
    return committed + rows;
}

static sqlite3 *create_db(const char *path, const char *journal) {
    sqlite3 *db = copen(path, RW);
    char sql[100];
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", journal);
    xexec(db, sql);
    xexec(db, "PRAGMA wal_autocheckpoint=0");
    xexec(db, "PRAGMA synchronous=FULL");
    xexec(db, "CREATE TABLE t(i INTEGER PRIMARY KEY, pad BLOB)");
    return db;
}

/* ------------------------------------------------------------------------ */
/* Children                                                                  */

/* NORMAL x20, FULL x10, NORMAL x20, cut: exactly 30 rows must survive. */
static void child_full_boundary(const char *path) {
    child_register(NULL, 0);
    sqlite3 *db = create_db(path, "WAL");
    long long c = 0;
    xexec(db, "PRAGMA synchronous=NORMAL");
    for (int k = 0; k < 20; k++) c = insert_tx(db, c, 1);
    if (brume_powercut_unsynced_bytes() == 0) child_fail("NORMAL commits left nothing unsynced");
    xexec(db, "PRAGMA synchronous=FULL");
    for (int k = 0; k < 10; k++) {
        c = insert_tx(db, c, 1);
        if (brume_powercut_unsynced_bytes() != 0)
            child_fail("after FULL commit %d: %llu bytes unsynced", k, brume_powercut_unsynced_bytes());
    }
    long long durable = c;
    xexec(db, "PRAGMA synchronous=NORMAL");
    for (int k = 0; k < 20; k++) c = insert_tx(db, c, 1);
    if (brume_powercut_unsynced_bytes() == 0) child_fail("NORMAL commits left nothing unsynced");
    send_rec(0, durable, c, NULL);
    cut();
}

/* NORMAL x25, wal_checkpoint(TRUNCATE), NORMAL x15, cut: exactly 25 rows. */
static void child_checkpoint(const char *path) {
    child_register(NULL, 0);
    sqlite3 *db = create_db(path, "WAL");
    long long c = 0;
    xexec(db, "PRAGMA synchronous=NORMAL");
    for (int k = 0; k < 25; k++) c = insert_tx(db, c, 1);
    int nLog = -1, nCkpt = -1;
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &nLog, &nCkpt);
    if (rc != SQLITE_OK) child_fail("checkpoint: %s", sqlite3_errmsg(db));
    if (brume_powercut_unsynced_bytes() != 0)
        child_fail("after checkpoint: %llu bytes unsynced", brume_powercut_unsynced_bytes());
    long long durable = c;
    for (int k = 0; k < 15; k++) c = insert_tx(db, c, 1);
    send_rec(0, durable, c, NULL);
    cut();
}

/* Writer (NORMAL) + read-only reader; both close without any sync of the WAL
 * (the read-only connection cannot checkpoint). In this process the data is
 * still there (page cache), unless discard-on-close; the cut loses it. */
static void child_close_unsynced(const char *path, int discard) {
    child_register(NULL, discard);
    sqlite3 *db = create_db(path, "WAL");
    sqlite3 *rd = copen(path, RO);
    long long c = 0;
    xexec(db, "PRAGMA synchronous=NORMAL");
    for (int k = 0; k < 20; k++) c = insert_tx(db, c, 1);
    if (cq1(rd, "SELECT count(*) FROM t") != c) child_fail("reader does not see the writer's rows");
    if (sqlite3_close(db) != SQLITE_OK) child_fail("close writer");
    if (sqlite3_close(rd) != SQLITE_OK) child_fail("close reader");
    unsigned long long left = brume_powercut_unsynced_bytes();
    if (discard ? left != 0 : left == 0) child_fail("after closing all: %llu bytes unsynced (discard=%d)", left, discard);
    db = copen(path, RW);
    long long seen = cq1(db, "SELECT count(*) FROM t");
    if (seen != (discard ? 0 : c)) child_fail("reopened in-process: %lld rows, want %lld", seen, discard ? 0 : c);
    send_rec(0, 0, c, NULL);
    cut();
}

/* Random: a random number of transactions, FULL/NORMAL mixed, checkpoints,
 * a read-only reader checking it sees every commit. */
static void child_random(const char *path, const char *journal, const char *leak, uint64_t seed) {
    rng_state = seed;
    child_register(leak, 0);
    int wal = strcmp(journal, "WAL") == 0;
    /* journal_mode=TRUNCATE: the commit truncates the journal and syncs that
     * only with synchronous=FULL (pager_end_transaction), so after a cut the
     * last NORMAL transaction is rolled back by its resurrected journal. */
    int truncate_mode = strcmp(journal, "TRUNCATE") == 0;
    sqlite3 *db = create_db(path, journal);
    sqlite3 *rd = rndn(2) ? copen(path, RO) : NULL;
    long long c = 0, durable = 0;
    send_rec(0, 0, 0, NULL);
    int ntx = 1 + rndn(250);
    for (int k = 0; k < ntx; k++) {
        int full = rndn(5) == 0;
        xexec(db, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        long long before = c;
        c = insert_tx(db, c, 1 + rndn(4));
        if (full) durable = c;
        else if (truncate_mode) durable = before;  /* see below */
        else if (!wal) durable = c;                /* DELETE, PERSIST: NORMAL syncs the commit too */
        if (wal && rndn(25) == 0) {
            static const int modes[] = {SQLITE_CHECKPOINT_PASSIVE, SQLITE_CHECKPOINT_FULL,
                                        SQLITE_CHECKPOINT_RESTART, SQLITE_CHECKPOINT_TRUNCATE};
            int nLog = -1, nCkpt = -1;
            int rc = sqlite3_wal_checkpoint_v2(db, NULL, modes[rndn(4)], &nLog, &nCkpt);
            if (rc == SQLITE_OK && nLog == nCkpt) durable = c;   /* everything backfilled and synced */
        }
        if (rd && cq1(rd, "SELECT count(*) FROM t") != c) child_fail("reader sees a different count");
        send_rec(0, durable, c, NULL);
    }
    cut();
}

/* Threads: one writer connection and three reader connections, each used by
 * its own thread (like Brume: SQLITE_OPEN_NOMUTEX, one connection per
 * thread), all sharing the overlay. Readers check that what they see never
 * goes backwards and never runs ahead of the writer. The writer cuts. */
static _Atomic long long th_done_floor;   /* rows whose COMMIT has returned */
static _Atomic long long th_ceiling;      /* rows whose COMMIT has started */
static _Atomic int th_stop;
static const char *th_path;

static void *reader_thread(void *arg) {
    (void)arg;
    sqlite3 *rd = copen(th_path, RO | SQLITE_OPEN_NOMUTEX);
    long long prev = 0;
    while (!atomic_load(&th_stop)) {
        long long floor = atomic_load(&th_done_floor);
        long long v = cq1(rd, "SELECT count(*) FROM t");
        long long ceil = atomic_load(&th_ceiling);
        if (v < prev || v < floor || v > ceil)
            child_fail("reader saw %lld rows (prev %lld, floor %lld, ceiling %lld)", v, prev, floor, ceil);
        prev = v;
    }
    sqlite3_close(rd);
    return NULL;
}

static void child_threads(const char *path, uint64_t seed) {
    rng_state = seed;
    child_register(NULL, 0);
    sqlite3 *db = create_db(path, "WAL");
    sqlite3_close(db);
    db = copen(path, RW | SQLITE_OPEN_NOMUTEX);
    xexec(db, "PRAGMA wal_autocheckpoint=0");
    th_path = path;
    pthread_t th[3];
    for (int k = 0; k < 3; k++) pthread_create(&th[k], NULL, reader_thread, NULL);
    long long c = 0, durable = 0, upper = 0;
    send_rec(0, 0, 0, NULL);
    int ntx = 1 + rndn(300);
    for (int k = 0; k < ntx; k++) {
        int full = rndn(5) == 0, rows = 1 + rndn(4);
        xexec(db, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        atomic_store(&th_ceiling, c + rows);
        c = insert_tx(db, c, rows);
        atomic_store(&th_done_floor, c);
        if (full) durable = upper = c;
        if (rndn(30) == 0) {
            /* With readers holding snapshots the checkpoint may stop early:
             * it still syncs the whole WAL if it backfilled anything, which
             * the API does not tell. Complete: exact; partial: a range. */
            int nLog = -1, nCkpt = -1;
            int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nLog, &nCkpt);
            upper = c;
            if (rc == SQLITE_OK && nLog == nCkpt) durable = c;
        }
        send_rec3(0, durable, upper, c, NULL);
    }
    cut();   /* readers are still running */
}

/* ------------------------------------------------------------------------ */
/* File-level model check                                                    */

#define MAXSZ (400 * 1024)

static unsigned char *ref, *dur, *tmp1, *tmp2;

static int model_check(void) {
    char path[600], full[1024];
    snprintf(path, sizeof path, "%s/model.bin", g_dir);
    if (brume_powercut_register(0) != SQLITE_OK) child_fail("register");
    sqlite3_vfs *v = sqlite3_vfs_find("powercut");
    if (!v) child_fail("no powercut vfs");
    v->xFullPathname(v, path, (int)sizeof full, full);
    ref = calloc(MAXSZ, 1); dur = calloc(MAXSZ, 1); tmp1 = malloc(MAXSZ); tmp2 = malloc(MAXSZ);
    sqlite3_int64 refSize = 0, durSize = 0;
    sqlite3_file *fa = malloc((size_t)v->szOsFile), *fb = malloc((size_t)v->szOsFile);
    int flags = SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, out;
    int haveB = 0;
    if (v->xOpen(v, full, fa, flags, &out) != SQLITE_OK) child_fail("open");

    for (int step = 0; step < 30000; step++) {
        int op = rndn(100);
        sqlite3_file *f = (haveB && rndn(2)) ? fb : fa;
        if (op < 35) {                                   /* write */
            sqlite3_int64 off; int len;
            if (rndn(2)) { off = (sqlite3_int64)rndn(80) * 4096; len = 4096; }
            else { off = rndn(300000); len = 1 + rndn(9000); }
            for (int k = 0; k < len; k++) tmp1[k] = (unsigned char)rnd();
            if (f->pMethods->xWrite(f, tmp1, len, off) != SQLITE_OK) child_fail("write");
            memcpy(ref + off, tmp1, (size_t)len);
            if (off + len > refSize) refSize = off + len;
        } else if (op < 41) {                            /* truncate */
            sqlite3_int64 sz = rndn((int)refSize + 8192);
            if (f->pMethods->xTruncate(f, sz) != SQLITE_OK) child_fail("truncate");
            if (sz < refSize) memset(ref + sz, 0, (size_t)(refSize - sz));
            refSize = sz;
        } else if (op < 75) {                            /* read */
            sqlite3_int64 off = rndn((int)refSize + 10000); int len = 1 + rndn(9000);
            memset(tmp2, 0xAA, (size_t)len);
            int rc = f->pMethods->xRead(f, tmp2, len, off);
            int want = off + len > refSize ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
            if (rc != want) child_fail("step %d read rc %d want %d", step, rc, want);
            if (memcmp(tmp2, ref + off, (size_t)len) != 0) child_fail("step %d read data mismatch at %lld+%d", step, (long long)off, len);
        } else if (op < 85) {                            /* size */
            sqlite3_int64 sz = -1;
            if (f->pMethods->xFileSize(f, &sz) != SQLITE_OK || sz != refSize)
                child_fail("step %d size %lld want %lld", step, (long long)sz, (long long)refSize);
        } else if (op < 90) {                            /* sync */
            if (f->pMethods->xSync(f, SQLITE_SYNC_NORMAL) != SQLITE_OK) child_fail("sync");
            memcpy(dur, ref, MAXSZ); durSize = refSize;
            if (brume_powercut_unsynced_bytes() != 0) child_fail("unsynced after sync");
        } else if (op < 95) {                            /* open / close second handle */
            if (haveB) { fb->pMethods->xClose(fb); haveB = 0; }
            else { if (v->xOpen(v, full, fb, flags, &out) != SQLITE_OK) child_fail("open b"); haveB = 1; }
        } else {                                         /* close all, reopen (overlay kept) */
            if (haveB) { fb->pMethods->xClose(fb); haveB = 0; }
            fa->pMethods->xClose(fa);
            if (v->xOpen(v, full, fa, flags, &out) != SQLITE_OK) child_fail("reopen");
        }
        if ((refSize != durSize || memcmp(ref, dur, (size_t)refSize) != 0) != (brume_powercut_unsynced_bytes() != 0)) {
            /* unsynced bytes may be 0 while a pure truncate is pending: allow that */
            if (brume_powercut_unsynced_bytes() != 0) child_fail("step %d: unsynced bytes but image is synced", step);
        }
    }
    /* close without sync: the real file holds exactly the last synced image */
    if (haveB) fb->pMethods->xClose(fb);
    fa->pMethods->xClose(fa);
    FILE *fp = fopen(full, "rb");
    if (!fp) child_fail("fopen");
    size_t got = fread(tmp1, 1, MAXSZ, fp);
    fclose(fp);
    if ((sqlite3_int64)got != durSize || memcmp(tmp1, dur, got) != 0)
        child_fail("real file (%zu bytes) != last synced image (%lld bytes)", got, (long long)durSize);
    /* ... and the process still sees its unsynced data */
    if (v->xOpen(v, full, fa, flags, &out) != SQLITE_OK) child_fail("reopen");
    sqlite3_int64 sz = -1;
    fa->pMethods->xFileSize(fa, &sz);
    if (sz != refSize) child_fail("reopen size %lld want %lld", (long long)sz, (long long)refSize);
    if (refSize > 0) {
        fa->pMethods->xRead(fa, tmp2, (int)refSize, 0);
        if (memcmp(tmp2, ref, (size_t)refSize) != 0) child_fail("reopen data");
    }
    fa->pMethods->xClose(fa);
    /* xDelete drops the overlay */
    v->xDelete(v, full, 0);
    if (brume_powercut_unsynced_bytes() != 0) child_fail("unsynced after delete");
    if (access(full, F_OK) == 0) child_fail("file not deleted");

    /* a file deleted behind our back and re-created must not get the old overlay */
    if (v->xOpen(v, full, fa, flags, &out) != SQLITE_OK) child_fail("open");
    fa->pMethods->xWrite(fa, "stale-stale", 11, 0);
    fa->pMethods->xClose(fa);
    if (brume_powercut_unsynced_bytes() == 0) child_fail("overlay not kept after close");
    unlink(full);
    fp = fopen(full, "wb"); fputs("fresh", fp); fclose(fp);
    if (v->xOpen(v, full, fa, flags, &out) != SQLITE_OK) child_fail("open");
    memset(tmp2, 0, 16);
    int rc = fa->pMethods->xRead(fa, tmp2, 11, 0);
    if (rc != SQLITE_IOERR_SHORT_READ || memcmp(tmp2, "fresh\0\0\0\0\0\0", 11) != 0) child_fail("stale overlay applied to a new file");
    if (brume_powercut_unsynced_bytes() != 0) child_fail("stale overlay not dropped");
    /* xAccess: a file with only unsynced content exists */
    fa->pMethods->xTruncate(fa, 0);
    int ex = -1;
    v->xAccess(v, full, SQLITE_ACCESS_EXISTS, &ex);
    if (ex != 0) child_fail("xAccess: logically empty file reported as existing");
    fa->pMethods->xWrite(fa, "x", 1, 100);
    v->xAccess(v, full, SQLITE_ACCESS_EXISTS, &ex);
    if (ex != 1) child_fail("xAccess: non-empty file reported missing");
    fa->pMethods->xClose(fa);
    v->xDelete(v, full, 0);

    /* leak = 1: every write reaches the real file at once */
    setenv("BRUME_POWERCUT_LEAK", "1", 1);
    brume_powercut_register(0);
    if (v->xOpen(v, full, fa, flags, &out) != SQLITE_OK) child_fail("open");
    fa->pMethods->xWrite(fa, "leaked", 6, 0);
    fp = fopen(full, "rb"); got = fread(tmp1, 1, 16, fp); fclose(fp);
    if (got != 6 || memcmp(tmp1, "leaked", 6) != 0) child_fail("leak=1 did not write through");
    fa->pMethods->xClose(fa);
    v->xDelete(v, full, 0);
    unsetenv("BRUME_POWERCUT_LEAK");

    /* discard on close */
    setenv("BRUME_POWERCUT_DISCARD_ON_CLOSE", "1", 1);
    brume_powercut_register(0);
    if (v->xOpen(v, full, fa, flags, &out) != SQLITE_OK) child_fail("open");
    fa->pMethods->xWrite(fa, "gone", 4, 0);
    fa->pMethods->xClose(fa);
    if (brume_powercut_unsynced_bytes() != 0) child_fail("discard-on-close kept data");
    v->xDelete(v, full, 0);
    unsetenv("BRUME_POWERCUT_DISCARD_ON_CLOSE");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Parent                                                                    */

static int g_cuts, g_failures;

static void remove_db(const char *path) {
    char p[700];
    const char *sfx[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4; i++) { snprintf(p, sizeof p, "%s%s", path, sfx[i]); unlink(p); }
}

typedef enum { EXPECT_DURABLE, EXPECT_RANGE, EXPECT_COMMITTED } Expect;

typedef struct Outcome { long long found, durable, committed; } Outcome;

/* Runs fn in a child that must die by SIGKILL, then checks the database. */
static int run_cut(const char *name, const char *path, Expect ex, Outcome *oc,
                   void (*fn)(const char *, const void *), const void *arg) {
    int fds[2];
    remove_db(path);
    if (pipe(fds) != 0) { perror("pipe"); exit(2); }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(2); }
    if (pid == 0) {
        close(fds[0]);
        g_pipe = fds[1];
        fn(path, arg);
        _exit(4);
    }
    close(fds[1]);
    Rec r, last;
    memset(&last, 0, sizeof last);
    int have = 0, err = 0;
    char errmsg[200] = "";
    for (;;) {
        ssize_t n = read(fds[0], &r, sizeof r);
        if (n == 0) break;
        if (n < 0) { if (errno == EINTR) continue; break; }
        if (n != (ssize_t)sizeof r) break;   /* records are < PIPE_BUF: atomic */
        if (r.kind == 1) { err = 1; snprintf(errmsg, sizeof errmsg, "%s", r.msg); }
        else { last = r; have = 1; }
    }
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    g_cuts++;
    int fail = 0;
    char why[400] = "";
    long long found = -1;
    if (err) { fail = 1; snprintf(why, sizeof why, "child: %s", errmsg); }
    else if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) { fail = 1; snprintf(why, sizeof why, "child did not die by SIGKILL (status %d)", st); }
    else if (!have) { fail = 1; snprintf(why, sizeof why, "child reported nothing"); }
    else {
        sqlite3 *db = NULL;
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix") != SQLITE_OK) {
            fail = 1; snprintf(why, sizeof why, "reopen: %s", sqlite3_errmsg(db));
        } else {
            sqlite3_stmt *s = NULL;
            const char *ic = NULL;
            if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
                ic = (const char *)sqlite3_column_text(s, 0);
            if (!ic || strcmp(ic, "ok") != 0) {
                fail = 1; snprintf(why, sizeof why, "integrity_check: %s (%s)", ic ? ic : "error", sqlite3_errmsg(db));
            }
            sqlite3_finalize(s);
            int ok1, ok2, ok3;
            long long cnt = q1(db, "SELECT count(*) FROM t", &ok1);
            long long mn = q1(db, "SELECT coalesce(min(i), 1) FROM t", &ok2);
            long long mx = q1(db, "SELECT coalesce(max(i), 0) FROM t", &ok3);
            found = cnt;
            if (!fail && !(ok1 && ok2 && ok3)) { fail = 1; snprintf(why, sizeof why, "query: %s", sqlite3_errmsg(db)); }
            else if (!fail && (mn != 1 || mx != cnt)) { fail = 1; snprintf(why, sizeof why, "rows are not a prefix: count %lld min %lld max %lld", cnt, mn, mx); }
            else if (!fail) {
                long long lo = ex == EXPECT_COMMITTED ? last.committed : last.durable;
                long long hi = ex == EXPECT_DURABLE ? last.upper : last.committed;
                if (cnt < lo || cnt > hi) {
                    fail = 1;
                    snprintf(why, sizeof why, "%lld rows, want %lld..%lld (durable %lld, committed %lld)",
                             cnt, lo, hi, last.durable, last.committed);
                }
            }
            if (!fail) {   /* the recovered database takes new writes */
                char *e = NULL;
                if (sqlite3_exec(db, "INSERT INTO t(pad) VALUES(x'00'); PRAGMA wal_checkpoint(TRUNCATE);", NULL, NULL, &e) != SQLITE_OK) {
                    fail = 1; snprintf(why, sizeof why, "write after recovery: %s", e ? e : "?");
                }
                sqlite3_free(e);
            }
        }
        sqlite3_close(db);
    }
    if (oc) { oc->found = found; oc->durable = last.durable; oc->committed = last.committed; }
    if (fail) {
        g_failures++;
        printf("FAIL %s: %s\n", name, why);
    } else {
        remove_db(path);
    }
    return !fail;
}

/* adapters */
static void fn_full(const char *p, const void *a) { (void)a; child_full_boundary(p); }
static void fn_ckpt(const char *p, const void *a) { (void)a; child_checkpoint(p); }
static void fn_close(const char *p, const void *a) { child_close_unsynced(p, *(const int *)a); }

typedef struct RandArg { const char *journal; const char *leak; uint64_t seed; } RandArg;
static void fn_rand(const char *p, const void *a) {
    const RandArg *ra = a;
    child_random(p, ra->journal, ra->leak, ra->seed);
}

static void fn_threads(const char *p, const void *a) { child_threads(p, *(const uint64_t *)a); }

static void series(const char *journal, const char *leak, int n, Expect ex, uint64_t *seed) {
    char path[600], name[200];
    snprintf(path, sizeof path, "%s/rand.db", g_dir);
    int fail0 = g_failures, lost = 0, kept_extra = 0;
    long long committed = 0, found = 0;
    for (int k = 0; k < n; k++) {
        RandArg ra = {journal, leak, (*seed)++};
        Outcome oc = {0, 0, 0};
        snprintf(name, sizeof name, "random %s leak=%s #%d (seed %llu)", journal, leak ? leak : "0", k,
                 (unsigned long long)ra.seed);
        if (run_cut(name, path, ex, &oc, fn_rand, &ra)) {
            committed += oc.committed;
            found += oc.found;
            if (oc.found < oc.committed) lost++;
            if (oc.found > oc.durable) kept_extra++;
        }
    }
    printf("  %-8s leak=%-4s %3d cuts, %d failures; rows committed %lld, survived %lld; "
           "cuts that lost rows: %d, that kept unsynced rows: %d\n",
           journal, leak ? leak : "0", n, g_failures - fail0, committed, found, lost, kept_extra);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 50;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/powercut.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 2; }
    printf("powercut selftest: sqlite %s, dir %s, seed %llu\n", sqlite3_libversion(), g_dir, (unsigned long long)seed);

    /* 1. file-level model check, in a child (keeps the parent on the plain unix VFS) */
    {
        int fds[2];
        if (pipe(fds) != 0) return 2;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            g_pipe = fds[1];
            rng_state = seed;
            _exit(model_check());
        }
        close(fds[1]);
        Rec r;
        int bad = 0;
        while (read(fds[0], &r, sizeof r) == (ssize_t)sizeof r) {
            if (r.kind == 1) { printf("FAIL model check: %s\n", r.msg); bad = 1; }
        }
        close(fds[0]);
        int st;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad = 1;
        if (bad) g_failures++;
        printf("  model check (30000 random file ops + close/reopen/delete/replace/leak/discard): %s\n", bad ? "FAIL" : "ok");
    }

    /* 2. deterministic cuts */
    char path[600];
    snprintf(path, sizeof path, "%s/det.db", g_dir);
    Outcome oc;
    int zero = 0, one = 1;
    rng_state = seed;
    if (run_cut("NORMAL/FULL/NORMAL", path, EXPECT_DURABLE, &oc, fn_full, NULL))
        printf("  NORMAL x20, FULL x10, NORMAL x20, cut: %lld of %lld rows survive (want %lld): ok\n", oc.found, oc.committed, oc.durable);
    if (run_cut("checkpoint", path, EXPECT_DURABLE, &oc, fn_ckpt, NULL))
        printf("  NORMAL x25, wal_checkpoint(TRUNCATE), NORMAL x15, cut: %lld of %lld rows survive (want %lld): ok\n", oc.found, oc.committed, oc.durable);
    if (run_cut("close unsynced", path, EXPECT_DURABLE, &oc, fn_close, &zero))
        printf("  NORMAL x20, close writer+reader (no sync), reopen in-process sees 20, cut: %lld rows survive (want 0): ok\n", oc.found);
    if (run_cut("close unsynced, discard", path, EXPECT_DURABLE, &oc, fn_close, &one))
        printf("  same with BRUME_POWERCUT_DISCARD_ON_CLOSE=1 (reopen sees 0), cut: %lld rows survive (want 0): ok\n", oc.found);

    /* 3. random cuts */
    series("WAL", NULL, n, EXPECT_DURABLE, &seed);
    series("WAL", "0.5", n, EXPECT_RANGE, &seed);
    {
        int nt = n / 5 > 0 ? n / 5 : 1, f0 = g_failures;
        char tpath[600], name[100];
        snprintf(tpath, sizeof tpath, "%s/threads.db", g_dir);
        long long committed = 0, found = 0;
        for (int k = 0; k < nt; k++) {
            uint64_t s1 = seed++;
            snprintf(name, sizeof name, "threads #%d (seed %llu)", k, (unsigned long long)s1);
            if (run_cut(name, tpath, EXPECT_DURABLE, &oc, fn_threads, &s1)) { committed += oc.committed; found += oc.found; }
        }
        printf("  %-8s leak=%-4s %3d cuts, %d failures; rows committed %lld, survived %lld "
               "(1 writer + 3 reader threads)\n", "WAL", "0", nt, g_failures - f0, committed, found);
    }
    series("DELETE", "0.5", n / 5 > 0 ? n / 5 : 1, EXPECT_COMMITTED, &seed);
    series("TRUNCATE", "0.5", n / 5 > 0 ? n / 5 : 1, EXPECT_DURABLE, &seed);
    series("PERSIST", "0.5", n / 5 > 0 ? n / 5 : 1, EXPECT_COMMITTED, &seed);

    printf("powercut selftest: %d cuts, %d failures\n", g_cuts, g_failures);
    if (g_failures == 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) { /* ignore */ }
    }
    return g_failures ? 1 : 0;
}
