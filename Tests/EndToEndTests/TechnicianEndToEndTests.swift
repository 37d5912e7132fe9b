import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `brume test` (the dry run) and `brume check --connect` against real peers: Mosquitto brokers
/// (one with passwords, one with TLS), a serial device on a pseudo-terminal, Modbus RTU and TCP
/// slaves (firmware-sim, libmodbus's server side).
@Suite(.serialized) struct TechnicianEndToEndTests {
    @Test func dryRunPrintsEveryReadingWithTheRulesDecisionAndStoresNothing() throws {
        let dir = TestKit.tempDir("brume-tech")
        let field = try Mosquitto(dir: dir, name: "field")
        let tcpPort = TestKit.freePort()
        let deadUplink = TestKit.freePort()   // nothing listens: the dry run must not need the cloud
        let serial = try Child(TestKit.product("firmware-sim"), ["serial", "--link", "\(dir)/tty-probe", "--rate", "20", "--garbage-every", "4"], dir: dir, name: "serial")
        let plc = try Child(TestKit.product("firmware-sim"), ["modbus", "--tcp", "127.0.0.1:\(tcpPort)", "--units", "1"], dir: dir, name: "plc")
        defer { serial.terminate(); plc.terminate() }
        #expect(TestKit.waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: "\(dir)/tty-probe") && TestKit.canConnect(port: tcpPort) })
        let config = "\(dir)/gateway.toml"
        try """
        [gateway]
        id = "gw-tech"
        data_dir = "\(dir)/var"

        [uplink.cloud]
        kind = "mqtt"
        url = "mqtt://127.0.0.1:\(deadUplink)"

        [[source]]
        name = "field"
        kind = "mqtt"
        url = "\(field.url)"
        subscribe = ["sensors/+/+"]
        qos = 1
        persistent_session = true

        [[source]]
        name = "probe"
        kind = "serial"
        port = "\(dir)/tty-probe"
        format = "kv"
        device = "probe"

        [[source]]
        name = "plc"
        kind = "modbus"
        url = "tcp://127.0.0.1:\(tcpPort)"
        poll = "200ms"
        timeout = "150ms"
        retries = 0

        [[source.device]]
        name = "pump"
        unit = 1
        points = [{ metric = "speed", table = "holding_register", address = 50, scale = 0.1 }]

        [[actuator]]
        name = "gh/fan"
        via = "field"
        type = "bool"
        topic = "actuators/gh/fan"

        [[rule]]
        name = "sanity"
        match = "gh/temperature"
        drop_if = "value > 100"

        [[rule]]
        name = "probe-seq"
        match = "probe/seq"
        drop_if = "true"

        [[trigger]]
        name = "hot"
        when = "gh/temperature > 30"
        then = { actuator = "gh/fan", value = true }
        """.write(toFile: config, atomically: true, encoding: .utf8)

        // A publisher feeding the field broker while the dry run listens.
        let publisher = Thread {
            usleep(1_500_000)
            for v in ["21.5", "150", "35"] {
                let p = try? Child("/usr/bin/mosquitto_pub", ["-p", "\(field.port)", "-q", "1", "-t", "sensors/gh/temperature", "-m", v], dir: dir, name: "pub-\(v)")
                p?.wait(timeout: 5)
                usleep(200_000)
            }
        }
        publisher.start()
        let run = try Child(TestKit.product("brume"), ["test", "--config", config, "--seconds", "4"], dir: dir, name: "dry-run")
        let rc = run.wait(timeout: 30)
        let out = run.stdout
        #expect(rc == 0, "exit \(String(describing: rc)): \(out)\n\(run.stderr)")
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.contains("[field] gh/temperature = 21.5  → kept") }, "\(out)")
        #expect(lines.contains { $0.contains("[field] gh/temperature = 150  → not kept: dropped by rule \"sanity\"") }, "\(out)")
        #expect(lines.contains { $0.contains("[field] gh/temperature = 35  → kept") }, "\(out)")
        #expect(lines.contains { $0.contains("trigger \"hot\" would command actuator \"gh/fan\" = true (dry run: not sent)") }, "\(out)")
        #expect(lines.contains { $0.contains("[probe] probe/temperature = ") && $0.hasSuffix("→ kept") }, "\(out)")
        #expect(lines.contains { $0.contains("[probe] probe/seq = ") && $0.contains("dropped by rule \"probe-seq\"") }, "\(out)")
        #expect(lines.contains { $0.contains("[plc] pump/speed = ") }, "\(out)")
        // The summary counts per source, with the garbage lines the serial parser refused.
        let probeSummary = lines.first { $0.hasPrefix("source probe: ") } ?? ""
        #expect(probeSummary.contains("rejected input: "), "\(out)")
        #expect(lines.contains { $0.hasPrefix("source field: 3 readings") }, "\(out)")
        #expect(lines.contains { $0.hasPrefix("source plc: ") && !$0.hasPrefix("source plc: 0 ") }, "\(out)")
        // Nothing stored, nothing sent, no actuator driven.
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/var"), "the dry run created the data folder")

        // One source only; a source that stays silent makes the exit status 5.
        let only = try Child(TestKit.product("brume"), ["test", "--config", config, "--seconds", "2", "--source", "field"], dir: dir, name: "dry-field")
        #expect(only.wait(timeout: 20) == 5, "\(only.stdout)\(only.stderr)")
        #expect(!only.stdout.contains("[probe]") && !only.stdout.contains("[plc]") && only.stdout.contains("source field: 0 readings"), "\(only.stdout)")
        let unknown = try Child(TestKit.product("brume"), ["test", "--config", config, "--source", "nope"], dir: dir, name: "dry-unknown")
        #expect(unknown.wait(timeout: 20) == 1)
        #expect(unknown.stderr.contains("no source \"nope\"") && unknown.stderr.contains("field, probe, plc"), "\(unknown.stderr)")
    }

    @Test func checkConnectTriesEveryBrokerPortAndDeviceAndSaysWhatWouldFail() throws {
        let dir = TestKit.tempDir("brume-tech")
        try FileManager.default.createDirectory(atPath: "\(dir)/pki", withIntermediateDirectories: true)
        let pki = try TestPKI(dir: "\(dir)/pki")
        let secure = try Mosquitto(dir: dir, name: "secure", tls: pki)
        let locked = try Mosquitto(dir: dir, name: "locked")
        let passwd = "\(dir)/broker.passwd"
        let mk = try Child("/usr/bin/mosquitto_passwd", ["-c", "-b", passwd, "gw", "right-pass"], dir: dir, name: "passwd")
        #expect(mk.wait(timeout: 10) == 0)
        try locked.reconfigure(extra: "allow_anonymous false\npassword_file \(passwd)")
        try "right-pass\n".write(toFile: "\(dir)/good.pass", atomically: true, encoding: .utf8)
        try "wrong-pass\n".write(toFile: "\(dir)/bad.pass", atomically: true, encoding: .utf8)
        chmod("\(dir)/good.pass", 0o600); chmod("\(dir)/bad.pass", 0o600)
        let rtu = try Child(TestKit.product("firmware-sim"), ["modbus", "--rtu", "\(dir)/tty-meters", "--units", "1"], dir: dir, name: "rtu")
        let serial = try Child(TestKit.product("firmware-sim"), ["serial", "--link", "\(dir)/tty-probe", "--rate", "5"], dir: dir, name: "serial")
        defer { rtu.terminate(); serial.terminate() }
        #expect(TestKit.waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: "\(dir)/tty-meters") && FileManager.default.fileExists(atPath: "\(dir)/tty-probe") })
        let closed = TestKit.freePort()
        func config(uplinkPass: String, meterUnits: [Int], probePort: String, field: String, ca: String = pki.ca) -> String {
            """
            [gateway]
            id = "gw-tech"
            data_dir = "\(dir)/var"

            [uplink.cloud]
            kind = "mqtt"
            url = "mqtts://localhost:\(secure.port)"
            tls = { ca_file = "\(ca)" }

            [uplink.site]
            kind = "mqtt"
            url = "\(locked.url)"
            username = "gw"
            password_file = "\(dir)/\(uplinkPass)"

            [[source]]
            name = "field"
            kind = "mqtt"
            \(field)
            subscribe = ["sensors/+/+"]

            [[source]]
            name = "probe"
            kind = "serial"
            port = "\(probePort)"
            format = "kv"

            [[source]]
            name = "meters"
            kind = "modbus"
            port = "\(dir)/tty-meters"
            baud = 115200
            timeout = "200ms"
            \(meterUnits.map { "[[source.device]]\nname = \"m\($0)\"\nunit = \($0)\npoints = [{ metric = \"v\", table = \"holding_register\", address = 8, type = \"float32\" }]" }.joined(separator: "\n"))
            """
        }
        let good = "\(dir)/good.toml"
        try config(uplinkPass: "good.pass", meterUnits: [1], probePort: "\(dir)/tty-probe",
                   field: "url = \"mqtts://localhost:\(secure.port)\"\ntls = { ca_file = \"\(pki.ca)\" }").write(toFile: good, atomically: true, encoding: .utf8)
        let ok = try Child(TestKit.product("brume"), ["check", "--connect", "--timeout", "5", good], dir: dir, name: "check-good")
        #expect(ok.wait(timeout: 60) == 0, "\(ok.stdout)\n\(ok.stderr)")
        let okOut = ok.stdout
        #expect(okOut.contains("ok   uplink cloud (mqtt mqtts://localhost:\(secure.port)): connected (MQTT 5, TLS)"), "\(okOut)")
        #expect(okOut.contains("ok   uplink site (mqtt \(locked.url)): connected (MQTT 5, as gw)"), "\(okOut)")
        #expect(okOut.contains("ok   source probe (serial \(dir)/tty-probe): "), "\(okOut)")
        #expect(okOut.contains("ok   source meters (modbus rtu ") && okOut.contains("m1 (unit 1) answered in "), "\(okOut)")
        #expect(okOut.contains("\(good): ok (gateway \"gw-tech\""), "\(okOut)")

        let bad = "\(dir)/bad.toml"
        try config(uplinkPass: "bad.pass", meterUnits: [1, 7], probePort: "\(dir)/tty-absent", field: "url = \"mqtt://127.0.0.1:\(closed)\"", ca: pki.rogueCert)
            .write(toFile: bad, atomically: true, encoding: .utf8)
        let no = try Child(TestKit.product("brume"), ["check", "--connect", "--timeout", "5", bad], dir: dir, name: "check-bad")
        #expect(no.wait(timeout: 60) == 3, "\(no.stdout)\n\(no.stderr)")
        let out = no.stdout
        #expect(out.contains("FAIL uplink cloud (mqtt mqtts://localhost:\(secure.port)): A TLS error occurred. (the broker's certificate does not verify against ca_file \(pki.rogueCert)"), "a CA that did not sign the broker's certificate: \(out)")
        #expect(out.contains("FAIL uplink site (mqtt \(locked.url)): the broker refused the connection: ") && out.lowercased().contains("not authori"), "\(out)")
        #expect(out.contains("FAIL source field (mqtt mqtt://127.0.0.1:\(closed)): Connection refused"), "\(out)")
        #expect(out.contains("FAIL source probe (serial \(dir)/tty-absent): open \(dir)/tty-absent: No such file or directory"), "\(out)")
        #expect(out.contains("FAIL source meters (modbus rtu ") && out.contains("m1 (unit 1) answered in ") && out.contains("m7 (unit 7): "), "\(out)")
        #expect(no.stderr.contains("\(bad): 5 of 5 would fail at start"), "\(no.stderr)")
    }
}
