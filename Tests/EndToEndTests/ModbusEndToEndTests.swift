import BrumeCore
import BrumeTestKit
import Foundation
import Testing

/// The gateway reads Modbus RTU (pty) and Modbus TCP slaves (firmware-sim,
/// libmodbus's server) and writes to them on cloud commands.
@Suite(.serialized) struct ModbusEndToEndTests {
    @Test func readingsReachTheCloudAndCommandsWriteRegisters() throws {
        let tcpPort = TestKit.freePort()
        let rig = try Rig(extraSources: { dir in """
            [[source]]
            name = "meters"
            kind = "modbus"
            port = "\(dir)/tty-meters"
            baud = 115200
            poll = "200ms"
            timeout = "150ms"
            offline_after = 2

            [[source.device]]
            name = "meter1"
            unit = 1
            points = [
              { metric = "voltage", table = "holding_register", address = 8, type = "float32" },
              { metric = "energy", table = "holding_register", address = 10, type = "float32", word_order = "little" },
              { metric = "uptime", table = "input_register", address = 40 },
            ]

            [[source.device]]
            name = "meter2"
            unit = 2
            points = [{ metric = "id", table = "holding_register", address = 0 }]

            [[source.device]]
            name = "meter9"
            unit = 9
            points = [{ metric = "id", table = "holding_register", address = 0 }]

            [[source]]
            name = "plc"
            kind = "modbus"
            url = "tcp://127.0.0.1:\(tcpPort)"
            poll = "200ms"

            [[source.device]]
            name = "pump"
            unit = 1
            points = [
              { metric = "running", table = "coil", address = 3 },
              { metric = "speed", table = "holding_register", address = 50, scale = 0.1 },
            ]

            [[actuator]]
            name = "pump/run"
            via = "plc"
            type = "bool"
            timeout = "2s"
            modbus = { device = "pump", table = "coil", address = 3, read_back = true }

            [[actuator]]
            name = "pump/speed"
            via = "plc"
            range = [0, 100]
            modbus = { device = "pump", table = "holding_register", address = 50, scale = 0.1, read_back = true }

            [[actuator]]
            name = "pump/stuck"
            via = "plc"
            type = "number"
            modbus = { device = "pump", table = "holding_register", address = 60, read_back = true }
            """ }, mqttSource: false)
        let rtu = try Child(TestKit.product("firmware-sim"), ["modbus", "--rtu", "\(rig.dir)/tty-meters", "--units", "1,2"], dir: rig.dir, name: "rtu")
        let tcp = try Child(TestKit.product("firmware-sim"), ["modbus", "--tcp", "127.0.0.1:\(tcpPort)", "--units", "1", "--write-log", "\(rig.dir)/writes.log"],
                            dir: rig.dir, name: "tcp")
        defer { rtu.terminate(); tcp.terminate() }
        #expect(TestKit.waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: "\(rig.dir)/tty-meters") && TestKit.canConnect(port: tcpPort) })
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway(ready: "source.name=plc")
        func readings(_ device: String, _ metric: String) -> [Reading] {
            cloud.readings.withLock { $0 }.filter { $0.device == device && $0.metric == metric }
        }
        #expect(TestKit.waitUntil(timeout: 15) { readings("meter1", "uptime").count >= 5 && readings("pump", "speed").count >= 3 },
                "no Modbus readings at the cloud: \(rig.gateway!.stderr.suffix(3000))")
        #expect(readings("meter1", "voltage").allSatisfy { if case .number(let v) = $0.value { abs(v - 3.14159) < 1e-5 } else { false } })
        #expect(readings("meter1", "energy").allSatisfy { if case .number(let v) = $0.value { abs(v - 3.14159) < 1e-5 } else { false } })
        #expect(readings("meter2", "id").first?.value == .number(1002))
        #expect(readings("meter9", "id").isEmpty)

        let commander = try CloudCommander(port: rig.cloud.port)
        try commander.send(#"{"id":"m1","actuator":"pump/run","value":false}"#)
        try commander.send(#"{"id":"m2","actuator":"pump/speed","value":42.5}"#)
        try commander.send(#"{"id":"m3","actuator":"pump/stuck","value":7}"#)
        try commander.send(#"{"id":"m4","actuator":"pump/speed","value":150}"#)
        #expect(TestKit.waitUntil(timeout: 15) { commander.allFinal(["m1", "m2", "m3", "m4"]) }, "\(commander.results.withLock { $0 })")
        #expect(commander.finalState("m1") == "done")
        #expect(commander.finalState("m2") == "done")
        #expect(commander.finalState("m3") == "failed", "the read-back of a register that does not keep the value fails the command")
        #expect(commander.details.withLock { $0["m3"] }?.contains("read back") == true, "\(commander.details.withLock { $0 })")
        #expect(commander.finalState("m4") == "rejected", "150 is outside the declared range")
        let writes = executedValues("\(rig.dir)/writes.log")
        #expect(writes.contains("unit=1 fc=5 address=3 values=0"), "\(writes)")
        #expect(writes.contains("unit=1 fc=6 address=50 values=425"), "\(writes)")
        #expect(writes.count == 3, "each command written exactly once: \(writes)")
        // The polled registers show the new state at the cloud.
        #expect(TestKit.waitUntil(timeout: 5) { readings("pump", "speed").last?.value == .number(42.5) })
        #expect(TestKit.waitUntil(timeout: 5) { readings("pump", "running").last?.value == .bool(false) })
        // The silent unit 9 is reported, the others kept reading.
        let log = rig.gateway!.stderr
        #expect(log.contains("modbus device not answering"), "\(log.suffix(2000))")
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 10) == 0)
    }
}
