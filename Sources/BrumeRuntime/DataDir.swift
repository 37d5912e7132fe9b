import BrumeConfig
import BrumeCore
import BrumeRules
import BrumeStore
import BrumeUplink
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The data folder: one gateway per folder, created if missing; secrets read from files.
extension Gateway {
    /// One gateway per data_dir: two would fight over the outbox and the MQTT client ids.
    /// The lock (flock on data_dir/brume.lock) goes with the process, even on kill -9.
    static func lockDataDir(_ dir: String) throws -> Int32 {
        let path = dir + "/brume.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw StartupError("cannot create \(path): \(String(cString: strerror(errno)))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            throw StartupError("another brume is already running with data_dir \(dir) (\(path) is locked); stop it first")
        }
        return fd
    }

    static func ensureDirectory(_ path: String) throws {
        var parts: [String] = []
        var cur = ""
        for comp in path.split(separator: "/", omittingEmptySubsequences: false) {
            cur += (cur.isEmpty && path.hasPrefix("/") ? "/" : (cur.isEmpty ? "" : "/")) + comp
            parts.append(cur)
        }
        for p in parts where !p.isEmpty && p != "/" {
            if mkdir(p, 0o750) != 0 && errno != EEXIST {
                throw StartupError("cannot create data_dir \(path): \(String(cString: strerror(errno)))")
            }
        }
        if access(path, W_OK) != 0 { throw StartupError("data_dir \(path) is not writable: \(String(cString: strerror(errno)))") }
    }

    /// Reads a secret file (first line, trailing newline removed). Warns when
    /// the file is readable by group or others. The secret is never logged.
    /// A secret's first line. A relative path is looked up in `$CREDENTIALS_DIRECTORY` when
    /// systemd provides one (`LoadCredential=NAME:/path` in the unit, `password_file = "NAME"`).
    static func secret(_ given: String?, logger: Logger) throws -> String? {
        guard var path = given else { return nil }
        if !path.hasPrefix("/"), let dir = getenv("CREDENTIALS_DIRECTORY").map({ String(cString: $0) }), !dir.isEmpty {
            path = dir + "/" + path
        }
        var st = stat()
        guard stat(path, &st) == 0 else { throw StartupError("cannot read password_file \(path): \(String(cString: strerror(errno)))") }
        if st.st_mode & 0o077 != 0 {
            logger.warning("secret file is readable by group or others; chmod 600 it", metadata: ["file": "\(path)"])
        }
        guard case .success(let text) = ConfigLoader.readFile(path) else {
            throw StartupError("cannot read password_file \(path): \(String(cString: strerror(errno)))")
        }
        return String(text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
            .trimmingCharacters(in: "\r")
    }
}
