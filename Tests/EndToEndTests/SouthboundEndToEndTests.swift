import BrumeCore
import BrumeTestKit
import Foundation
import Testing

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
}
