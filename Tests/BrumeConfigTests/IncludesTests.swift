import Foundation
import Testing
@testable import BrumeConfig

// conf.d merging and ${...} references (Sources/BrumeConfig/Includes.swift). The golden cases
// valid-conf-d, conf-d-errors and conf-d-syntax-error cover `brume check`'s output; these cover
// what a value becomes.

private let base = """
[gateway]
id = "${GATEWAY_ID}"

[uplink.cloud]
kind = "mqtt"
url = "${BROKER_URL:-mqtt://127.0.0.1:1883}"
username = "${credential:broker-user}"
topic_prefix = "costs/$${literal}/x$y"
"""

private func load(_ files: [(String, String)], _ env: [String: String]) -> Result<(GatewayConfig, [Diagnostic]), ConfigFailure> {
    ConfigLoader.parse(files: files.map { (name: $0.0, text: $0.1) }, environment: env)
}

private func errors(_ r: Result<(GatewayConfig, [Diagnostic]), ConfigFailure>) -> [String] {
    if case .failure(.invalid(let d)) = r { return d.map(\.description) }
    return []
}

@Suite("conf.d includes and ${...} references")
struct IncludesTests {
    @Test("environment variables, fallbacks, credentials and the $${ escape are resolved in string values")
    func variablesResolve() throws {
        let creds = FileManager.default.temporaryDirectory.appendingPathComponent("brume-creds-\(getpid())")
        try FileManager.default.createDirectory(at: creds, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: creds) }
        try "s3cret pass\n".write(to: creds.appendingPathComponent("broker-user"), atomically: true, encoding: .utf8)

        let r = load([("gateway.toml", base)], ["GATEWAY_ID": "gw-site-3", "CREDENTIALS_DIRECTORY": creds.path])
        guard case .success(let (cfg, _)) = r else { Issue.record("\(errors(r))"); return }
        #expect(cfg.gateway.id == "gw-site-3")
        let up = try #require(cfg.uplinks.first)
        #expect(up.connection.url.description == "mqtt://127.0.0.1:1883", "the fallback applies when the variable is unset")
        #expect(up.connection.username == "s3cret pass", "one trailing newline of the credential file is removed, inner spaces kept")
        #expect(up.topicPrefix == "costs/${literal}/x$y", "$${ is a literal ${ and a lone $ stays")

        let r2 = load([("gateway.toml", base)], ["GATEWAY_ID": "gw-site-3", "BROKER_URL": "mqtts://cloud.example:8883", "CREDENTIALS_DIRECTORY": creds.path])
        guard case .success(let (cfg2, _)) = r2 else { Issue.record("\(errors(r2))"); return }
        #expect(cfg2.uplinks.first?.connection.url.description == "mqtts://cloud.example:8883", "a set variable wins over the fallback")
    }

    @Test("an unset variable or a missing credential is an error at the value, naming what is missing")
    func missingReferencesAreErrors() {
        let r = load([("gateway.toml", base)], [:])
        let e = errors(r)
        #expect(e.count == 2, "\(e)")
        #expect(e.contains { $0.hasPrefix("gateway.toml:2:6: environment variable GATEWAY_ID is not set") }, "\(e)")
        #expect(e.contains { $0.hasPrefix("gateway.toml:7:12: \"${credential:broker-user}\": no systemd credentials here") }, "\(e)")

        let bad = load([("gateway.toml", "[gateway]\nid = \"${1X}\"\n[uplink.c]\nkind = \"mqtt\"\nurl = \"mqtt://h:1\"\ncert = \"${credential:../etc/shadow}\"\nkey = \"${OPEN\"\n")], ["CREDENTIALS_DIRECTORY": "/tmp"])
        let be = errors(bad)
        #expect(be.contains { $0.hasPrefix("gateway.toml:2:6: \"${1X}\": expected ${NAME}") }, "\(be)")
        #expect(be.contains { $0.contains("6:8: \"${credential:../etc/shadow}\": a credential name uses letters") }, "a credential name cannot climb out of the directory: \(be)")
        #expect(be.contains { $0.contains("7:7: \"${\" without a closing \"}\"") }, "\(be)")
    }

    @Test("a later file merges tables, appends [[tables]] and replaces values; positions keep their file")
    func mergeRules() {
        let main = """
        [gateway]
        id = "gw-change-me"
        [uplink.cloud]
        kind = "mqtt"
        url = "mqtt://127.0.0.1:1883"
        [[source]]
        name = "a"
        kind = "mqtt"
        url = "mqtt://127.0.0.1:1884"
        subscribe = ["a/+/+"]
        """
        let site = """
        [gateway]
        id = "gw-7"
        [uplink.cloud]
        client_id = "gw-7-up"
        [[source]]
        name = "b"
        kind = "mqtt"
        url = "mqtt://127.0.0.1:1885"
        subscribe = ["b/+/+"]
        """
        let r = load([("/etc/brume/gateway.toml", main), ("/etc/brume/conf.d/10-site.toml", site)], [:])
        guard case .success(let (cfg, warnings)) = r else { Issue.record("\(errors(r))"); return }
        #expect(cfg.gateway.id == "gw-7")
        #expect(warnings.isEmpty, "the placeholder was replaced: no warning, got \(warnings)")
        #expect(cfg.uplinks.map(\.connection.clientID) == ["gw-7-up"])
        #expect(cfg.uplinks.first?.connection.url.description == "mqtt://127.0.0.1:1883", "keys the site file does not set are kept")
        #expect(cfg.sources.map(\.name) == ["a", "b"])
        #expect(cfg.files == ["/etc/brume/gateway.toml", "/etc/brume/conf.d/10-site.toml"])

        // The same source name twice: the error is in the file that repeats it and points at the first.
        let dup = site.replacingOccurrences(of: "name = \"b\"", with: "name = \"a\"")
        let e = errors(load([("/etc/brume/gateway.toml", main), ("/etc/brume/conf.d/10-site.toml", dup)], [:]))
        #expect(e == ["/etc/brume/conf.d/10-site.toml:6:8: [[source]] \"a\": duplicate source name \"a\" (first defined at /etc/brume/gateway.toml:7:8)"], "\(e)")
    }

    @Test("conf.d lists *.toml in byte order, skipping hidden files and package leftovers; no folder is no include")
    func directoryListing() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("brume-confd-\(getpid())")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("conf.d"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for n in ["b.toml", "A.toml", "10-x.toml", "9-y.toml", ".hidden.toml", "x.toml.dpkg-old", "x.toml~", "notes.txt"] {
            try "".write(to: dir.appendingPathComponent("conf.d/\(n)"), atomically: true, encoding: .utf8)
        }
        let main = dir.appendingPathComponent("gateway.toml").path
        #expect(Includes.directory(for: main) == dir.path + "/conf.d")
        let files = try Includes.files(in: Includes.directory(for: main)).get().map { String($0.split(separator: "/").last!) }
        #expect(files == ["10-x.toml", "9-y.toml", "A.toml", "b.toml"])
        #expect(try Includes.files(in: dir.path + "/absent").get().isEmpty)
        #expect(Includes.directory(for: "gateway.toml") == "conf.d")
    }
}

@Suite("operator tools and unresolved references")
struct LenientReferencesTests {
    @Test("a tool loads a config whose secrets it cannot resolve; the daemon's load refuses it")
    func toolsIgnoreUnresolved() {
        let text = """
        [gateway]
        id = "${GATEWAY_ID}"
        [api]
        listen = "127.0.0.1:9700"
        [uplink.cloud]
        kind = "mqtt"
        url = "mqtt://127.0.0.1:1883"
        username = "gw"
        password_file = "${CREDENTIALS_DIRECTORY}/mqtt-password"
        """
        let strict = ConfigLoader.parse(files: [(name: "gateway.toml", text: text)], environment: [:])
        #expect(errors(strict).count == 2, "\(errors(strict))")
        let tool = ConfigLoader.parse(files: [(name: "gateway.toml", text: text)], environment: [:], unresolved: .ignore)
        guard case .success(let (cfg, _)) = tool else { Issue.record("\(errors(tool))"); return }
        #expect(cfg.api.port == 9700)
        // Problems elsewhere are still problems.
        let broken = ConfigLoader.parse(files: [(name: "gateway.toml", text: text + "\nbogus = 1\n")], environment: [:], unresolved: .ignore)
        #expect(errors(broken) == ["gateway.toml:10:1: [uplink.cloud]: unknown key \"bogus\""], "\(errors(broken))")
    }
}
