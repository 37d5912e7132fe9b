import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Builds WebAssembly test modules with the real tools: the Swift toolchain's clang
/// (`--target=wasm32`, wasm-ld) for C through sdk/build.sh, Debian's wabt (`wat2wasm`) for text.
public enum WasmBuild {
    /// The clang that has wasm-ld beside it: the toolchain's (next to `swift`), else PATH's.
    public static var clang: String {
        var candidates = ["/opt/swift/usr/bin/clang"]
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            candidates.insert("\(dir)/clang", at: dir.hasSuffix("swift/usr/bin") ? 0 : candidates.count)
        }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) && FileManager.default.isExecutableFile(atPath: ($0 as NSString).deletingLastPathComponent + "/wasm-ld") } ?? "clang"
    }

    static func run(_ exe: String, _ args: [String], env: [String: String] = [:]) throws {
        let dir = TestKit.tempDir("brume-wasm-build")
        let c = try Child(exe, args, dir: dir, name: "build", env: env)
        guard c.wait(timeout: 60) == 0 else { throw TestError("\(exe) \(args.joined(separator: " ")) failed: \(c.stderr)\(c.stdout)") }
    }

    /// Compiles `sdk/examples/NAME.c` or C source text (when it contains a newline) into `out`.
    @discardableResult
    public static func c(_ source: String, out: String) throws -> String {
        var path = source
        if source.contains("\n") {
            path = out + ".c"
            try source.write(toFile: path, atomically: true, encoding: .utf8)
        } else if !source.hasPrefix("/") {
            path = TestKit.repositoryRoot + "/sdk/examples/\(source).c"
        }
        try run("/bin/sh", [TestKit.repositoryRoot + "/sdk/build.sh", path, out], env: ["CLANG": clang])
        return out
    }

    /// Compiles `sdk/examples/NAME.swift` (Embedded Swift) into `out`.
    @discardableResult
    public static func swift(_ name: String, out: String) throws -> String {
        try run("/bin/sh", [TestKit.repositoryRoot + "/sdk/build.sh", TestKit.repositoryRoot + "/sdk/examples/\(name).swift", out], env: ["CLANG": clang])
        return out
    }

    /// Assembles WebAssembly text (or `sdk/examples/NAME.wat`) into `out`.
    @discardableResult
    public static func wat(_ source: String, out: String) throws -> String {
        var path = source
        if source.contains("(module") {
            path = out + ".wat"
            try source.write(toFile: path, atomically: true, encoding: .utf8)
        } else if !source.hasPrefix("/") {
            path = TestKit.repositoryRoot + "/sdk/examples/\(source).wat"
        }
        try run("/usr/bin/wat2wasm", [path, "-o", out])
        return out
    }

    public static func bytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
}
