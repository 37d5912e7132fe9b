import BrumeCore
import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// 1-Wire probes end to end: a w1 sysfs tree as the kernel writes it (a good probe, one whose
/// CRC fails, one that appears later), the real gateway, the cloud broker.
@Suite(.serialized) struct SouthboundEndToEndTests {
    @Test func oneWireProbesReachTheCloudAndBadValuesNeverDo() throws {
        let w1 = TestKit.tempDir("brume-w1")
        func write(_ id: String, _ text: String) throws {
            try FileManager.default.createDirectory(atPath: "\(w1)/\(id)", withIntermediateDirectories: true)
            try text.write(toFile: "\(w1)/\(id)/w1_slave", atomically: true, encoding: .utf8)
        }
        try FileManager.default.createDirectory(atPath: "\(w1)/w1_bus_master1", withIntermediateDirectories: true)
        try write("28-0316a2795bff", "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n")
        try write("28-0516a3c3e1ff", "ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n")
        let rig = try Rig(extraSources: { _ in """
            [[source]]
            name = "probes"
            kind = "onewire"
            interval = "1s"
            root = "\(w1)"
            device = "boiler"
            probes = [
              { id = "28-0316a2795bff", metric = "flow_temperature" },
              { id = "28-0516a3c3e1ff", metric = "return_temperature" },
              { id = "28-0000075a2b11", device = "tank", metric = "temperature" },
            ]
            """ })
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway(ready: "source.name=probes")
        func values(_ device: String, _ metric: String) -> [Double] {
            cloud.readings.withLock { $0 }.filter { $0.device == device && $0.metric == metric }.compactMap { if case .number(let d) = $0.value { d } else { nil } }
        }
        #expect(TestKit.waitUntil(timeout: 20) { values("boiler", "flow_temperature").count >= 2 })
        #expect(Set(values("boiler", "flow_temperature")) == [23.125])
        #expect(values("boiler", "return_temperature").isEmpty, "a CRC failure is never a reading")
        #expect(values("tank", "temperature").isEmpty)
        // The missing probe is plugged in; the first one resets (85 °C) for a moment.
        try write("28-0000075a2b11", "8c 01 4b 46 7f ff 04 10 d9 : crc=d9 YES\n8c 01 4b 46 7f ff 04 10 d9 t=24750\n")
        try write("28-0316a2795bff", "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n")
        #expect(TestKit.waitUntil(timeout: 20) { !values("tank", "temperature").isEmpty })
        #expect(Set(values("tank", "temperature")) == [24.75])
        #expect(!values("boiler", "flow_temperature").contains(85), "the power-on value is refused")
        #expect(rig.gateway!.stderr.contains("1-Wire probe missing") && rig.gateway!.stderr.contains("1-Wire probe is back"))
        let m = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect((metric(m, #"brume_source_errors_total{source="probes",reason="crc_error"}"#) ?? 0) >= 2, "\(m.split(separator: "\n").filter { $0.contains("probes") })")
        #expect((metric(m, #"brume_source_errors_total{source="probes",reason="probe_missing"}"#) ?? 0) >= 1)
        #expect((metric(m, #"brume_source_errors_total{source="probes",reason="power_on_reset"}"#) ?? 0) >= 1)

        // brume ports finds them and says which source claims each.
        let ports = try Child(TestKit.product("brume"), ["ports", "--config", rig.config, "--w1-devices", w1], dir: rig.dir, name: "ports")
        #expect(ports.wait(timeout: 20) == 0)
        #expect(ports.stdout.contains("28-0316a2795bff  source probes") && ports.stdout.contains("28-0000075a2b11  source probes") && !ports.stdout.contains("w1_bus_master1"), "\(ports.stdout)")
        let stanza = try Child(TestKit.product("brume"), ["ports", "--toml", "--w1-devices", w1], dir: rig.dir, name: "ports-toml")
        #expect(stanza.wait(timeout: 20) == 0)
        #expect(stanza.stdout.contains("kind = \"onewire\"") && stanza.stdout.contains("{ id = \"28-0516a3c3e1ff\""), "\(stanza.stdout)")
    }

    /// LoRaWAN end to end: frames built by an independent implementation (Python's
    /// `cryptography` for the MIC and the encryption, PyPI's `pycayennelpp` for the payload),
    /// sent over UDP as a Semtech packet forwarder sends them; the real gateway; the cloud
    /// broker. A wrong MIC, a CRC failure, an unknown DevAddr and a replay are counted and
    /// never readings; a retransmission is one reading; the counters survive a restart.
    @Test func loRaWANUplinksReachTheCloudAndForgeriesNeverDo() throws {
        let udp = TestKit.freePort()
        let nwk = "2b7e151628aed2a6abf7158809cf4f3c", app = "000102030405060708090a0b0c0d0e0f"
        let rig = try Rig(extraSources: { _ in """
            [[source]]
            name = "lora"
            kind = "lorawan"
            listen = "127.0.0.1:\(udp)"
            gateways = ["AA555A0000000001"]
            devices = [
              { dev_addr = "26011BDA", device = "field-3", nwk_s_key = "\(nwk)", app_s_key = "\(app)" },
              { dev_addr = "26011C00", device = "meter-9", nwk_s_key = "\(app)", app_s_key = "\(nwk)", codec = "raw" },
            ]

            [[actuator]]
            name = "field-3/valve"
            via = "lora"
            accepts = ["open", "close"]
            timeout = "30s"
            lorawan = { device = "field-3", fport = 10, values = { open = "01", close = "0002" } }

            [[actuator]]
            name = "field-3/valve-quick"
            via = "lora"
            type = "bool"
            timeout = "1s"
            lorawan = { device = "field-3", fport = 11, values = { true = "ff", false = "00" } }
            """ })
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway(ready: "source.name=lora")
        var sends = 0
        func send(_ frames: String, eui: String = "AA555A0000000001") throws -> JSONValue {
            sends += 1
            let file = "\(rig.dir)/frames-\(sends).json"
            try frames.write(toFile: file, atomically: true, encoding: .utf8)
            let c = try Child("/usr/bin/env", ["python3", fixturesDirectory() + "/lorawan_forwarder.py", "--port", "\(udp)", "--eui", eui, "--frames", file],
                              dir: rig.dir, name: "forwarder-\(sends)")
            guard c.wait(timeout: 60) == 0 else { throw TestError("forwarder: \(c.stderr)") }
            return try JSONParser.parse(Array(c.stdout.utf8))
        }
        func values(_ device: String, _ metric: String) -> [Value] {
            cloud.readings.withLock { $0 }.filter { $0.device == device && $0.metric == metric }.map(\.value)
        }
        let f3 = #""devaddr": "26011BDA", "nwk": "\#(nwk)", "app": "\#(app)""#
        let acks = try send("""
            [{\(f3), "fcnt": 1, "lpp": [["temperature", 1, 22.5], ["humidity", 2, 41.5]], "rssi": -57, "lsnr": 7.5, "repeat": 2},
             {\(f3), "fcnt": 2, "lpp": [["temperature", 1, 99.0]], "corrupt_mic": true},
             {\(f3), "fcnt": 2, "lpp": [["temperature", 1, 98.0]], "stat": -1},
             {"devaddr": "26011BFF", "nwk": "\(nwk)", "app": "\(app)", "fcnt": 5, "lpp": [["temperature", 1, 97.0]]},
             {\(f3), "fcnt": 3, "lpp": [["temperature", 1, 23.0], ["gps", 4, [42.3519, -87.9094, 10]]], "rssi": -101, "lsnr": -4.25},
             {\(f3), "fcnt": 1, "lpp": [["temperature", 1, 96.0]]},
             {"devaddr": "26011C00", "nwk": "\(app)", "app": "\(nwk)", "fcnt": 10, "raw": "0102ff"}]
            """)
        #expect(acks["push"]?.number == 8 && acks["pull"]?.number == 1 && acks["missing"]?.number == 0, "every PUSH_DATA and PULL_DATA acknowledged: \(acks)")
        #expect(TestKit.waitUntil(timeout: 20) { values("meter-9", "payload") == [.string("0102ff")] && values("field-3", "temperature_1").count == 2 })
        #expect(values("field-3", "temperature_1") == [.number(22.5), .number(23.0)], "once each; the retransmission, the forgery, the CRC failure and the replay are not readings")
        #expect(values("field-3", "humidity_2") == [.number(41.5)])
        #expect(values("field-3", "gps_4_latitude") == [.number(42.3519)] && values("field-3", "gps_4_longitude") == [.number(-87.9094)])
        #expect(values("field-3", "rssi") == [.number(-57), .number(-101)] && values("field-3", "snr") == [.number(7.5), .number(-4.25)])
        let m = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        for (reason, n) in [("bad_mic", 1), ("crc_error", 1), ("unknown_devaddr", 1), ("fcnt_replay", 1), ("duplicate", 1)] {
            #expect(metric(m, #"brume_source_errors_total{source="lora",reason="\#(reason)"}"#) == Double(n), "\(reason): \(m.split(separator: "\n").filter { $0.contains("lora") })")
        }
        #expect(metric(m, #"brume_lorawan_rssi_dbm{source="lora",device="field-3"}"#) == -101, "\(m.split(separator: "\n").filter { $0.contains("lorawan") })")
        let status = try statusJSON(rig)
        let src = status["sources"]?.elements.first { $0["name"]?.string == "lora" }
        let dev = src?["devices"]?.elements.first { $0["name"]?.string == "field-3" }
        #expect(dev?["lorawan"]?["fcnt"]?.number == 3 && dev?["lorawan"]?["last_refusal"]?.string == "fcnt_replay", "\(src ?? .null)")

        // A forwarder that is not in `gateways` is not listened to.
        let stranger = try send("[{\(f3), \"fcnt\": 40, \"lpp\": [[\"temperature\", 1, 50.0]]}]", eui: "AA555A00000000FF")
        #expect(stranger["push"]?.number == 0 && stranger["missing"]?.number == 2)

        // Restart: the counters were persisted; an old counter is still a replay, the next one goes.
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 20) == 0)
        #expect(((try? String(contentsOfFile: "\(rig.dir)/var/lorawan-lora.fcnt", encoding: .utf8)) ?? "").contains("26011BDA 3 "))
        try rig.startGateway(ready: "source.name=lora")
        _ = try send("[{\(f3), \"fcnt\": 3, \"lpp\": [[\"temperature\", 1, 95.0]]}, {\(f3), \"fcnt\": 4, \"lpp\": [[\"temperature\", 1, 23.5]]}]")
        #expect(TestKit.waitUntil(timeout: 20) { values("field-3", "temperature_1").count == 3 })
        #expect(values("field-3", "temperature_1") == [.number(22.5), .number(23.0), .number(23.5)])
        let m2 = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect(metric(m2, #"brume_source_errors_total{source="lora",reason="fcnt_replay"}"#) == 1, "the replay after the restart")

        // Downlinks to a Class A device: a command waits for the device's next uplink and goes
        // in its receive window (RX1: the uplink's tmst + 1 s), checked by the forwarder as the
        // device would check it (MIC, decryption); a confirmed uplink gets its ACK.
        let commander = try CloudCommander(port: rig.cloud.port)
        try commander.send(#"{"id":"v1","actuator":"field-3/valve","value":"open"}"#)
        usleep(500_000)
        #expect(commander.finalState("v1") == nil, "nothing sent before the device speaks")
        let d1 = try send("[{\(f3), \"fcnt\": 5, \"lpp\": [[\"temperature\", 1, 23.6]]}]")
        let down1 = d1["downlinks"]?.elements ?? [JSONValue]()
        #expect(down1.count == 1, "\(d1)")
        #expect(down1.first?["ok"] == .bool(true) && down1.first?["fport"]?.number == 10 && down1.first?["payload"]?.string == "01"
                && down1.first?["devaddr"]?.string == "26011BDA" && down1.first?["fcnt"]?.number == 0 && down1.first?["ack"] == .bool(false), "\(down1)")
        let upTmst = d1["uplinks"]?[0]?["tmst"]?.number ?? 0
        #expect(down1.first?["tmst"]?.number == Double((UInt32(upTmst) &+ 1_000_000)) && down1.first?["ipol"] == .bool(true)
                && down1.first?["freq"]?.number == 868.1 && down1.first?["datr"]?.string == "SF7BW125", "RX1 timing: \(down1)")
        #expect(TestKit.waitUntil(timeout: 10) { commander.finalState("v1") == "done" }, "\(commander.results.withLock { $0 })")
        let c2 = try send("[{\(f3), \"fcnt\": 6, \"confirmed\": true, \"lpp\": [[\"temperature\", 1, 23.7]]}]")
        let down2 = c2["downlinks"]?.elements ?? [JSONValue]()
        #expect(down2.count == 1 && down2.first?["ack"] == .bool(true) && down2.first?["fport"] == nil && down2.first?["fcnt"]?.number == 1
                && down2.first?["ok"] == .bool(true), "a confirmed uplink is acknowledged: \(down2)")
        // A command whose device does not speak within its timeout fails and is never sent later.
        try commander.send(#"{"id":"v2","actuator":"field-3/valve-quick","value":true}"#)
        #expect(TestKit.waitUntil(timeout: 10) { commander.finalState("v2") == "failed" }, "\(commander.results.withLock { $0 })")
        #expect(commander.details.withLock { $0["v2"] ?? "" }.contains("not sent"))
        let d3 = try send("[{\(f3), \"fcnt\": 7, \"lpp\": [[\"temperature\", 1, 23.8]]}]")
        #expect(d3["downlinks"]?.elements.isEmpty == true, "an expired command is not sent: \(d3)")
        #expect(TestKit.waitUntil(timeout: 10) { values("field-3", "temperature_1").count == 6 }, "\(values("field-3", "temperature_1"))")
    }

    /// GPIO end to end on the simulated chip (the test seam below libgpiod: this kernel has no
    /// GPIO): a bouncing door contact and a meter's reed contact (firmware-sim gpio) reach the
    /// cloud as states and a total; a relay output is set by a cloud command through the command
    /// path, and goes back to its safe state when the gateway stops; the total goes on from
    /// where it was after a restart.
    @Test func gpioContactsMeterPulsesAndARelay() throws {
        let chip = TestKit.tempDir("brume-gpio")
        let rig = try Rig(extraSources: { _ in """
            [[source]]
            name = "gpio"
            kind = "gpio"
            chip = "simulated:\(chip)"
            interval = "1s"
            device = "pumphouse"
            inputs = [
              { line = 17, metric = "door_open", bias = "pull-up", active_low = true, debounce = "30ms" },
              { line = 27, metric = "water_m3", counter = "falling", scale = 0.001, bias = "pull-up" },
            ]
            outputs = [{ line = 22, safe = false }]

            [[actuator]]
            name = "pumphouse/pump"
            via = "gpio"
            line = 22
            type = "bool"
            """ }, mqttSource: false)
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway(ready: "source.name=gpio")
        func numbers(_ metric: String) -> [Double] {
            cloud.readings.withLock { $0 }.filter { $0.device == "pumphouse" && $0.metric == metric }.compactMap { if case .number(let d) = $0.value { d } else { nil } }
        }
        func out22() -> String? { try? String(contentsOfFile: "\(chip)/out-22", encoding: .utf8) }
        #expect(TestKit.waitUntil(timeout: 10) { out22() == "0\n" }, "the relay starts in its safe state")
        // 40 pulses (each with two bounces) and three door changes (each with bounce).
        let sim = try Child(TestKit.product("firmware-sim"), ["gpio", "--dir", chip, "--pulse-rate", "20", "--door-every", "0.6", "--duration", "2"],
                            dir: rig.dir, name: "gpio-sim")
        #expect(sim.wait(timeout: 30) == 0, "\(sim.stderr)")
        #expect(sim.stdout.contains("firmware-sim: 40 pulses") || sim.stdout.contains("firmware-sim: 39 pulses") || sim.stdout.contains("firmware-sim: 41 pulses"), "\(sim.stdout)")
        let pulses = Double(sim.stdout.split(separator: "\n").last { $0.hasPrefix("firmware-sim:") && $0.hasSuffix("pulses") }?.split(separator: " ")[1] ?? "0") ?? 0
        #expect(TestKit.waitUntil(timeout: 10) { abs((numbers("water_m3").last ?? 0) - pulses / 1000) < 1e-9 }, "every pulse once, no bounce: \(numbers("water_m3").last ?? -1) vs \(pulses / 1000)")
        let doors = cloud.readings.withLock { $0 }.filter { $0.metric == "door_open" }.map(\.value)
        #expect(doors.first == .bool(false) && doors.contains(.bool(true)), "\(doors)")
        let m = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect(metric(m, #"brume_source_readings_total{source="gpio"}"#) ?? 0 >= 3)

        // The relay, from the cloud, through the command path.
        let commander = try CloudCommander(port: rig.cloud.port)
        try commander.send(#"{"id":"pump-1","actuator":"pumphouse/pump","value":true}"#)
        #expect(TestKit.waitUntil(timeout: 10) { commander.finalState("pump-1") == "done" }, "\(commander.results.withLock { $0 })")
        #expect(out22() == "1\n")
        try commander.send(#"{"id":"pump-2","actuator":"pumphouse/pump","value":"on"}"#)
        #expect(TestKit.waitUntil(timeout: 10) { commander.finalState("pump-2") == "rejected" }, "a GPIO output takes true or false")
        #expect(out22() == "1\n")

        // Stop: safe state. Start again: the total goes on from the same count.
        let before = numbers("water_m3").last ?? 0
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 20) == 0)
        #expect(out22() == "0\n", "stopped: the relay is back in its safe state")
        try rig.startGateway(ready: "source.name=gpio")
        let sim2 = try Child(TestKit.product("firmware-sim"), ["gpio", "--dir", chip, "--pulse-rate", "20", "--door-every", "0", "--duration", "0.5"],
                             dir: rig.dir, name: "gpio-sim-2")
        #expect(sim2.wait(timeout: 30) == 0)
        let more = Double(sim2.stdout.split(separator: "\n").last { $0.hasSuffix("pulses") }?.split(separator: " ")[1] ?? "0") ?? 0
        #expect(TestKit.waitUntil(timeout: 10) { abs((numbers("water_m3").last ?? 0) - (before + more / 1000)) < 1e-9 }, "\(numbers("water_m3"))")
        let totals = numbers("water_m3")
        #expect(zip(totals, totals.dropFirst()).allSatisfy { $0.0 <= $0.1 + 1e-12 }, "a total never goes back: \(totals)")
    }

    /// `brume check --connect` on the Pi's southbound: GPIO lines requested as the gateway would
    /// (the simulated chip; a chip that does not exist goes through libgpiod itself and fails
    /// with its reason), LoRaWAN UDP ports free or held by another program.
    @Test func checkConnectTriesGPIOChipsAndLoRaWANPorts() throws {
        let dir = TestKit.tempDir("brume-southcheck")
        let chip = TestKit.tempDir("brume-gpio")
        let held = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(held) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(held, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(held, $0, &len) } }
        let heldPort = Int(UInt16(bigEndian: a.sin_port))
        let freePort = TestKit.freePort()
        let keys = #"nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C", app_s_key = "000102030405060708090A0B0C0D0E0F""#
        try """
            [gateway]
            id = "gw-south"
            data_dir = "\(dir)/var"

            [uplink.cloud]
            kind = "mqtt"
            url = "mqtt://127.0.0.1:\(TestKit.freePort())"

            [[source]]
            name = "pins"
            kind = "gpio"
            chip = "simulated:\(chip)"
            inputs = [{ line = 17, metric = "door" }]
            outputs = [{ line = 22, safe = false }]

            [[source]]
            name = "header"
            kind = "gpio"
            chip = "gpiochip9"
            inputs = [{ line = 4, metric = "door" }]

            [[source]]
            name = "lora"
            kind = "lorawan"
            listen = "127.0.0.1:\(freePort)"
            devices = [{ dev_addr = "26011BDA", device = "a", \(keys) }]

            [[source]]
            name = "lora-busy"
            kind = "lorawan"
            listen = "127.0.0.1:\(heldPort)"
            devices = [{ dev_addr = "26011BDB", device = "b", \(keys) }]
            """.write(toFile: "\(dir)/gateway.toml", atomically: true, encoding: .utf8)
        let c = try Child(TestKit.product("brume"), ["check", "--connect", "--timeout", "3", "\(dir)/gateway.toml"], dir: dir, name: "check")
        #expect(c.wait(timeout: 60) == 3, "\(c.stdout)\n\(c.stderr)")
        let out = c.stdout
        #expect(out.contains("ok   source pins (GPIO simulated:\(chip)): simulated:\(chip): 1 input and 1 output requested"), "\(out)")
        #expect(out.contains("FAIL source header (GPIO gpiochip9): cannot open GPIO chip \"gpiochip9\": "), "\(out)")
        #expect(out.contains("ok   source lora (LoRaWAN UDP 127.0.0.1:\(freePort)): the port is free; 1 device declared"), "\(out)")
        #expect(out.contains("FAIL source lora-busy (LoRaWAN UDP 127.0.0.1:\(heldPort)): cannot listen: Address already in use"), "\(out)")
        #expect((try? String(contentsOfFile: "\(chip)/out-22", encoding: .utf8)) == "0\n", "the output was requested in its safe state")
    }
}

