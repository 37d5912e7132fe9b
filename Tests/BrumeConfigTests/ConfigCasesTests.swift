import Foundation
import Testing
@testable import BrumeConfig

// Golden tests for `brume check` diagnostics.
//
// Every folder under `cases/` holds a `gateway.toml` and an `expected.txt` with exactly what
// `brume check gateway.toml` prints to stdout when run from inside that folder. The test loads
// the file with `ConfigLoader.load(path:)`, renders the result the way `Check.run`
// (Sources/brume/Brume.swift) does, with the file shown as `gateway.toml`, and compares.
//
// To add a case: create `cases/<name>/gateway.toml`, then from inside the folder run
// `brume check gateway.toml > expected.txt` and READ expected.txt before committing it.

/// Tests/BrumeConfigTests/cases
private let casesDirectory: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .appendingPathComponent("cases", isDirectory: true)

/// The repository root (where the canonical gateway.toml lives).
private let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // BrumeConfigTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()  // repository root

/// Names of the case folders (those that contain a gateway.toml), sorted.
private let caseNames: [String] = {
    let fm = FileManager.default
    guard let entries = try? fm.contentsOfDirectory(atPath: casesDirectory.path) else { return [] }
    return entries.filter { name in
        var isDir: ObjCBool = false
        let dir = casesDirectory.appendingPathComponent(name).path
        return fm.fileExists(atPath: dir, isDirectory: &isDir) && isDir.boolValue
            && fm.fileExists(atPath: casesDirectory.appendingPathComponent(name).appendingPathComponent("gateway.toml").path)
    }.sorted()
}()

private func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }

/// What `brume check` prints on stdout for `path`, with the file shown as `shownAs`.
/// (The error count goes to stderr and is not part of it.)
private func renderCheck(path: String, shownAs: String) -> String {
    // The main file as `shownAs`, an included file relative to the case folder (conf.d/NAME).
    let folder = String(path.dropLast("gateway.toml".count))
    func relative(_ file: String) -> String { file == path ? shownAs : file.hasPrefix(folder) ? String(file.dropFirst(folder.count)) : file }
    func shown(_ d: Diagnostic) -> String {
        var d = d
        d.file = relative(d.file)
        return "\(d)".replacingOccurrences(of: folder, with: "")
    }
    var lines: [String] = []
    switch ConfigLoader.load(path: path) {
    case .success(let (config, warnings)):
        lines += warnings.map(shown)
        let merged = config.files.dropFirst().map(relative)
        lines.append("\(shownAs): ok (gateway \"\(config.gateway.id)\", \(plural(config.sources.count, "source")), \(plural(config.uplinks.count, "uplink"))\(merged.isEmpty ? "" : "; merged: " + merged.joined(separator: ", ")))")
    case .failure(.invalid(let diagnostics)):
        lines += diagnostics.map(shown)
    case .failure(.unreadable(let p, let reason)):
        // brume check prints this on stderr and exits 2; a case file must always be readable.
        lines.append("UNREADABLE \(p): \(reason)")
    }
    return lines.joined(separator: "\n")
}

private func trimmingTrailingNewlines(_ s: String) -> String {
    var s = Substring(s)
    while s.last == "\n" || s.last == "\r" { s = s.dropLast() }
    return String(s)
}

@Suite("brume check diagnostics (cases/)")
struct ConfigCasesTests {
    @Test("there are config cases to check")
    func casesExist() {
        #expect(caseNames.count >= 18, "expected at least 18 case folders in \(casesDirectory.path), found \(caseNames.count)")
    }

    @Test("diagnostics match expected.txt", arguments: caseNames)
    func caseMatchesExpected(_ name: String) throws {
        let dir = casesDirectory.appendingPathComponent(name, isDirectory: true)
        let tomlPath = dir.appendingPathComponent("gateway.toml").path
        let expectedPath = dir.appendingPathComponent("expected.txt").path
        let expectedData = try #require(FileManager.default.contents(atPath: expectedPath),
                                        "case \(name): missing \(expectedPath)")
        let expected = trimmingTrailingNewlines(String(decoding: expectedData, as: UTF8.self))
        let actual = trimmingTrailingNewlines(renderCheck(path: tomlPath, shownAs: "gateway.toml"))
        #expect(actual == expected, """
            case \(name): brume check output differs from expected.txt
            --- expected (\(expectedPath))
            \(expected)
            --- actual
            \(actual)
            """)
    }

    @Test("an invalid case fails, a valid one succeeds (like the exit code of brume check)", arguments: caseNames)
    func caseOutcome(_ name: String) {
        let tomlPath = casesDirectory.appendingPathComponent(name).appendingPathComponent("gateway.toml").path
        let result = ConfigLoader.load(path: tomlPath)
        switch result {
        case .success:
            #expect(name.hasPrefix("valid"), "case \(name) loads without errors but its name does not start with \"valid\"")
        case .failure(.invalid(let diagnostics)):
            #expect(!name.hasPrefix("valid"), "case \(name) should be valid, got:\n\(diagnostics.map { "\($0)" }.joined(separator: "\n"))")
            #expect(diagnostics.contains { $0.severity == .error }, "case \(name): invalid without any error")
        case .failure(.unreadable(let p, let reason)):
            Issue.record("case \(name): cannot read \(p): \(reason)")
        }
    }

    @Test("the canonical gateway.toml at the repository root is valid")
    func canonicalExampleLoads() {
        let path = repositoryRoot.appendingPathComponent("gateway.toml").path
        switch ConfigLoader.load(path: path) {
        case .success(let (config, warnings)):
            #expect(warnings.isEmpty, "gateway.toml has warnings:\n\(warnings.map { "\($0)" }.joined(separator: "\n"))")
            #expect(config.gateway.id == "gw-demo-01")
            #expect(!config.sources.isEmpty)
            #expect(config.uplinks.count == 1)
        case .failure(.invalid(let diagnostics)):
            Issue.record("gateway.toml is invalid:\n\(diagnostics.map { "\($0)" }.joined(separator: "\n"))")
        case .failure(.unreadable(let p, let reason)):
            Issue.record("cannot read \(p): \(reason)")
        }
    }
}
