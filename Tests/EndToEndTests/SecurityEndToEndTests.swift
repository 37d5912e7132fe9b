import BrumeCore
import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Brume drives real actuators: who may command them, what a web page can do to the local API,
/// and what a hostile value can do to a device. Real brokers, real brume, the `brume keygen` and
/// `brume sign` commands a backend would use.
@Suite(.serialized) struct SecurityEndToEndTests {
    /// A key pair through the CLI: (key file, public key).
    func keygen(_ dir: String, _ kid: String) throws -> (String, String) {
        let k = try Child(TestKit.product("brume"), ["keygen", "--kid", kid, "--out", dir], dir: dir, name: "keygen-\(kid)")
        #expect(k.wait(timeout: 10) == 0)
        guard let line = k.stdout.split(separator: "\n").first(where: { $0.hasPrefix("\(kid) = ") }) else { throw TestError("keygen printed: \(k.stdout)") }
        return ("\(dir)/\(kid).key", String(line.dropFirst(kid.count + 4).dropLast()))
    }

    func sign(_ dir: String, key: String, kid: String, gateway: String = "gw-e2e", _ json: String) throws -> String {
        let s = try Child(TestKit.product("brume"), ["sign", "--key", key, "--kid", kid, "--gateway", gateway, json], dir: dir, name: "sign")
        #expect(s.wait(timeout: 10) == 0, "brume sign: \(s.stderr)")
        return s.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A rig with one MQTT actuator (a setpoint) and a string actuator with a JSON payload.
    /// The actuators' processes live as long as the returned array.
    func rig(commands: String, env: [String: String] = [:], uplinkExtra: String = "") throws -> (Rig, String, String, [Child]) {
        let rig = try Rig(extraSources: { _ in """
            [[source]]
            name = "plant"
            kind = "mqtt"
            url = "FIELD_URL"
            subscribe = ["plant/+/+"]

            [[actuator]]
            name = "boiler/setpoint"
            via = "plant"
            topic = "actuators/setpoint/set"
            ack_topic = "actuators/setpoint/state"
            range = [0, 100000]
            timeout = "2s"

            [[actuator]]
            name = "panel/text"
            via = "plant"
            topic = "actuators/panel/set"
            type = "string"
            payload = '{"text":"{value}","by":"brume"}'

            \(commands)
            """ }, mqttSource: false, uplinkExtra: uplinkExtra)
        rig.gatewayEnv = env
        let setpointLog = "\(rig.dir)/setpoint.log", panelLog = "\(rig.dir)/panel.log"
        var devices: [Child] = []
        for (topic, log, name) in [("actuators/setpoint/set", setpointLog, "setpoint"), ("actuators/panel/set", panelLog, "panel")] {
            let args = ["actuator", "--broker", rig.field.url, "--topic", topic, "--log", log, "--ready-file", "\(rig.dir)/\(name).ready",
                        "--state-topic", "actuators/\(name)/state"]
            devices.append(try Child(TestKit.product("firmware-sim"), args, dir: rig.dir, name: name))
            #expect(TestKit.waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: "\(rig.dir)/\(name).ready") })
        }
        return (rig, setpointLog, panelLog, devices)
    }

    static var now: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    @Test func onlyValidSignedCommandsReachTheDevice() throws {
        let keys = TestKit.tempDir()
        let (k1, pub1) = try keygen(keys, "k2026")
        let (k0, _) = try keygen(keys, "k2025") // rotated out: not in the configuration
        let (rig, log, _, devices) = try rig(commands: """
            [commands]
            max_lifetime = "1h"
            [commands.keys]
            k2026 = "\(pub1)"
            """)
        defer { withExtendedLifetime(devices) {} } // the actuators run until the test ends
        try rig.startGateway(ready: "source.name=plant")
        let cloud = try CloudCommander(port: rig.cloud.port)
        let exp = Self.now + 60_000
        let valid = try sign(keys, key: k1, kid: "k2026", #"{"id":"ok","actuator":"boiler/setpoint","value":42,"expires":\#(exp)}"#)
        try cloud.send(valid)
        try cloud.send(#"{"id":"unsigned","actuator":"boiler/setpoint","value":1,"expires":\#(exp)}"#)
        // Altered in transit: the value changed, the signature kept.
        try cloud.send(try sign(keys, key: k1, kid: "k2026", #"{"id":"forged","actuator":"boiler/setpoint","value":2,"expires":\#(exp)}"#)
            .replacingOccurrences(of: #""value":2"#, with: #""value":99999"#))
        try cloud.send(try sign(keys, key: k1, kid: "k2026", gateway: "gw-other", #"{"id":"retargeted","actuator":"boiler/setpoint","value":3,"expires":\#(exp)}"#))
        try cloud.send(try sign(keys, key: k0, kid: "k2025", #"{"id":"rotated","actuator":"boiler/setpoint","value":4,"expires":\#(exp)}"#))
        try cloud.send(try sign(keys, key: k1, kid: "k2026", #"{"id":"expired","actuator":"boiler/setpoint","value":5,"expires":\#(Self.now - 1000)}"#))
        try cloud.send(try sign(keys, key: k1, kid: "k2026", #"{"id":"far","actuator":"boiler/setpoint","value":6,"expires":\#(Self.now + 10 * 86_400_000)}"#))
        let ids = ["ok", "unsigned", "forged", "retargeted", "rotated", "expired", "far"]
        #expect(TestKit.waitUntil(timeout: 20) { cloud.allFinal(ids) }, "\(cloud.results.withLock { $0 })")
        try cloud.send(valid) // replayed: the same id, not run again
        usleep(1_000_000)
        let reasons = cloud.details.withLock { $0 }
        #expect(cloud.finalState("ok") == "done")
        for (id, reason) in [("unsigned", "unsigned"), ("forged", "bad_signature"), ("retargeted", "bad_signature"), ("rotated", "unknown_key"), ("far", "expiry_too_far")] {
            #expect(cloud.finalState(id) == "rejected" && (reasons[id] ?? "").hasPrefix(reason), "\(id): \(cloud.finalState(id) ?? "-") \(reasons[id] ?? "")")
        }
        #expect(cloud.finalState("expired") == "expired")
        #expect(executedValues(log) == ["42"], "only the valid command reached the device, once: \(executedValues(log))")
        let metrics = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect(metrics.contains(#"reason="bad_signature""#))
        // brume sign refuses a command without an expiry (it could be replayed for ever).
        let noExpiry = try Child(TestKit.product("brume"), ["sign", "--key", k1, "--kid", "k2026", "--gateway", "gw-e2e", #"{"id":"x","actuator":"boiler/setpoint","value":1}"#],
                                 dir: keys, name: "sign-noexp")
        #expect(noExpiry.wait(timeout: 10) == 2 && noExpiry.stderr.contains("expires"))
        // brume check warns when actuators take unsigned commands.
        let check = try Child(TestKit.product("brume"), ["check", rig.config], dir: rig.dir, name: "check")
        #expect(check.wait(timeout: 10) == 0)
        #expect(!(check.stdout + check.stderr).contains("unsigned"), "signed configuration: no warning")
    }

    @Test func anUnsynchronisedClockRunsNoCommandWithAnExpiry() throws {
        let keys = TestKit.tempDir()
        let (k1, pub1) = try keygen(keys, "k1")
        let offsetFile = TestKit.tempDir() + "/clock"
        // The board's clock in 1970, not synchronised.
        try "-\(Self.now - 2 * 86_400_000) unsynced\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
        let (rig, log, _, devices) = try rig(commands: """
            [commands.keys]
            k1 = "\(pub1)"
            """, env: ["BRUME_FAULT_CLOCK_OFFSET_FILE": offsetFile])
        defer { withExtendedLifetime(devices) {} } // the actuators run until the test ends
        try rig.startGateway(ready: "source.name=plant")
        #expect(TestKit.waitUntil(timeout: 5) { (try? statusJSON(rig)["clock"]?["trusted"]?.bool) == false })
        let cloud = try CloudCommander(port: rig.cloud.port)
        try cloud.send(try sign(keys, key: k1, kid: "k1", #"{"id":"early","actuator":"boiler/setpoint","value":7,"expires":\#(Self.now + 60_000)}"#))
        #expect(TestKit.waitUntil(timeout: 10) { cloud.finalState("early") != nil })
        #expect(cloud.finalState("early") == "rejected" && (cloud.details.withLock { $0["early"] } ?? "").hasPrefix("clock_unsynchronised"))
        // NTP synchronises the clock: commands run again.
        try "0 synced\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
        #expect(TestKit.waitUntil(timeout: 5) { (try? statusJSON(rig)["clock"]?["trusted"]?.bool) == true })
        try cloud.send(try sign(keys, key: k1, kid: "k1", #"{"id":"later","actuator":"boiler/setpoint","value":8,"expires":\#(Self.now + 60_000)}"#))
        #expect(TestKit.waitUntil(timeout: 10) { cloud.finalState("later") == "done" })
        #expect(executedValues(log) == ["8"])
    }

    @Test func hostileStringValuesNeverReachADeviceUnescaped() throws {
        let (rig, _, panel, devices) = try rig(commands: "")
        defer { withExtendedLifetime(devices) {} } // the actuators run until the test ends
        // Unsigned commands are accepted here (no keys): brume check says what that means.
        let check = try Child(TestKit.product("brume"), ["check", rig.config], dir: rig.dir, name: "check")
        #expect(check.wait(timeout: 10) == 0)
        #expect((check.stdout + check.stderr).contains("commands are accepted unsigned"), "\(check.stdout)")
        try rig.startGateway(ready: "source.name=plant")
        let cloud = try CloudCommander(port: rig.cloud.port)
        let injections = [#"a","by":"evil"#, #"x\"}, {"#, "{value}", "\\", "日本語 ✓"]
        for (i, v) in injections.enumerated() {
            var json: [UInt8] = []
            WireFormat.appendString(v, to: &json)
            try cloud.send(#"{"id":"s\#(i)","actuator":"panel/text","value":\#(String(decoding: json, as: UTF8.self))}"#)
        }
        // Line ends and escape sequences would end the device's command line: refused.
        try cloud.send(#"{"id":"crlf","actuator":"panel/text","value":"ok\r\nREBOOT"}"#)
        try cloud.send(#"{"id":"esc","actuator":"panel/text","value":"\u001b[2J"}"#)
        let ids = injections.indices.map { "s\($0)" } + ["crlf", "esc"]
        #expect(TestKit.waitUntil(timeout: 20) { cloud.allFinal(ids) })
        #expect(cloud.finalState("crlf") == "rejected" && (cloud.details.withLock { $0["crlf"] } ?? "").hasPrefix("bad_value"))
        #expect(cloud.finalState("esc") == "rejected")
        #expect(TestKit.waitUntil(timeout: 5) { executedValues(panel).count == injections.count })
        // Every payload the device got is the template's JSON document, the value one string in it.
        let got = executedValues(panel)
        #expect(got.count == injections.count)
        for (payload, v) in zip(got, injections) {
            let doc = try JSONParser.parse(Array(payload.utf8))
            #expect(doc["text"] == .string(v) && doc["by"] == .string("brume"), "payload \(payload) for value \(v)")
            if case .object(let members) = doc { #expect(members.count == 2, "extra fields in \(payload)") }
        }
    }

    @Test func webPagesCannotDriveTheLocalAPI() throws {
        let rig = try Rig()
        try rig.startGateway()
        let port = rig.apiPort
        func reloads() throws -> Double { try statusJSON(rig)["gateway"]?["config"]?["reloads"]?.number ?? -1 }
        let before = try reloads()
        // DNS rebinding: another name for 127.0.0.1.
        #expect(try TestHTTP.request(port: port, path: "/api/v1/status", headers: ["Host": "evil.example:\(port)"]).status == 421)
        #expect(try TestHTTP.request(port: port, path: "/api/v1/status", headers: ["Host": "localhost:\(port)"]).status == 200)
        #expect(try TestHTTP.request(port: port, path: "/api/v1/status", headers: ["Host": "[::1]:\(port)"]).status == 200)
        // Cross-site POSTs: no custom header, or a foreign Origin.
        #expect(try TestHTTP.request("POST", port: port, path: "/api/v1/reload").status == 403)
        #expect(try TestHTTP.request("POST", port: port, path: "/api/v1/reload", headers: ["X-Brume-Request": "1", "Origin": "http://evil.example"]).status == 403)
        #expect(try TestHTTP.request("POST", port: port, path: "/api/v1/buffer/purge?confirm=yes", headers: ["Origin": "http://evil.example"]).status == 403)
        #expect(try TestHTTP.request("POST", port: port, path: "/api/v1/reload", headers: ["X-Brume-Request": "1", "Host": "evil.example"]).status == 421)
        #expect(try reloads() == before, "a refused request changed something")
        // The CLI and a same-origin request still work.
        #expect(try TestHTTP.request("POST", port: port, path: "/api/v1/reload", headers: ["X-Brume-Request": "1", "Origin": "http://127.0.0.1:\(port)", "Host": "127.0.0.1:\(port)"]).status == 200)
        let (code, _, err) = try brumeCLI(rig, ["reload"], name: "reload")
        #expect(code == 0, "\(err)")
        #expect(try reloads() == before + 2)
    }

    /// deploy/mosquitto/cloud-acl.conf on a real Mosquitto with per-client credentials: the
    /// gateway delivers and takes its commands; another gateway can neither command it nor read
    /// its data; the backend can do both.
    @Test func brokerAccessControlKeepsGatewaysApart() throws {
        let dir = TestKit.tempDir()
        let passwd = "\(dir)/passwd"
        for (user, pass) in [("gw-e2e", "gw-secret"), ("gw-other", "other-secret"), ("backend", "backend-secret")] {
            let p = try Child("/usr/bin/mosquitto_passwd", (user == "gw-e2e" ? ["-c"] : []) + ["-b", passwd, user, pass], dir: dir, name: "passwd-\(user)")
            #expect(p.wait(timeout: 10) == 0, "\(p.stderr)")
        }
        let acl = TestKit.repositoryRoot + "/deploy/mosquitto/cloud-acl.conf"
        try "gw-secret\n".write(toFile: "\(dir)/gw.pass", atomically: true, encoding: .utf8)
        chmod("\(dir)/gw.pass", 0o600)
        let (rig, log, _, devices) = try rig(commands: "[commands]\nsignatures = \"off\"", uplinkExtra: """
            username = "gw-e2e"
            password_file = "\(dir)/gw.pass"
            """)
        defer { withExtendedLifetime(devices) {} } // the actuators run until the test ends
        try rig.cloud.reconfigure(extra: "allow_anonymous false\npassword_file \(passwd)\nacl_file \(acl)")
        try rig.startGateway(ready: "source.name=plant")
        func sub(_ user: String, _ pass: String, _ topic: String) throws -> Child {
            try Child("/usr/bin/mosquitto_sub", ["-h", "127.0.0.1", "-p", "\(rig.cloud.port)", "-u", user, "-P", pass, "-t", topic, "-q", "1", "-v"], dir: rig.dir, name: "sub-\(user)")
        }
        func pub(_ user: String, _ pass: String, _ topic: String, _ payload: String) throws {
            let p = try Child("/usr/bin/mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(rig.cloud.port)", "-u", user, "-P", pass, "-t", topic, "-q", "1", "-m", payload],
                              dir: rig.dir, name: "pub-\(user)")
            _ = p.wait(timeout: 10)
        }
        let backend = try sub("backend", "backend-secret", "brume/+/telemetry")
        let spy = try sub("gw-other", "other-secret", "brume/gw-e2e/#")
        defer { backend.kill9(); spy.kill9() }
        usleep(500_000)
        for i in 1...5 {
            let p = try Child("/usr/bin/mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(rig.field.port)", "-t", "plant/boiler/temp", "-q", "1", "-m", "\(i)"], dir: rig.dir, name: "field-pub")
            _ = p.wait(timeout: 10)
        }
        #expect(TestKit.waitUntil(timeout: 15) { backend.stdout.contains("brume/gw-e2e/telemetry") }, "the backend got no telemetry: \(rig.gateway!.stderr.suffix(800))")
        // Another gateway's credentials: its command is dropped by the broker, never run.
        try pub("gw-other", "other-secret", "brume/gw-e2e/commands", #"{"id":"rogue","actuator":"boiler/setpoint","value":666}"#)
        try pub("backend", "backend-secret", "brume/gw-e2e/commands", #"{"id":"good","actuator":"boiler/setpoint","value":7}"#)
        #expect(TestKit.waitUntil(timeout: 10) { executedValues(log) == ["7"] }, "executed: \(executedValues(log))")
        usleep(1_000_000)
        #expect(executedValues(log) == ["7"], "a command from another gateway's credentials ran")
        #expect(!spy.stdout.contains("telemetry"), "another gateway read this gateway's telemetry")
    }
}
