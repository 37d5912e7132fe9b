/*
 * brume_powercut.h - test-only SQLite VFS that simulates a power cut.
 *
 * The "powercut" VFS wraps the default unix VFS. Writes to the main database,
 * its -wal and its rollback journal are kept in memory (an overlay shared by
 * every handle of this process on the same file) and only reach the real file
 * when SQLite calls xSync on it. When the process dies (SIGKILL), whatever was
 * not synced is gone: that is the power cut. See powercut.c for the model and
 * its limits.
 *
 * Environment (read at every brume_powercut_register call):
 *   BRUME_POWERCUT_LEAK=p      0..1, probability that an unsynced write also
 *                              reaches the real file at once (default 0).
 *   BRUME_POWERCUT_SEED=n      seed of the leak PRNG (default getpid()^time).
 *   BRUME_POWERCUT_DISCARD_ON_CLOSE=1
 *                              drop unsynced data when the last handle of a
 *                              file is closed instead of keeping it (like the
 *                              OS page cache) until the process dies.
 *
 * Not for production use.
 */
#ifndef BRUME_POWERCUT_H
#define BRUME_POWERCUT_H

#ifdef __cplusplus
extern "C" {
#endif

/* Registers the VFS "powercut" wrapping the unix VFS (the default VFS when
 * "unix" is not found). make_default != 0 makes it the default VFS.
 * Returns SQLITE_OK (0) on success, an SQLite error code otherwise.
 * May be called more than once (e.g. in a forked child, to re-read the
 * environment and re-seed the PRNG). */
int brume_powercut_register(int make_default);

/* Bytes of unsynced data currently held in memory (all files), for tests. */
unsigned long long brume_powercut_unsynced_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* BRUME_POWERCUT_H */
