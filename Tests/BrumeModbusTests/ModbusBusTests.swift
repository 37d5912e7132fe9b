import BrumeCore
import BrumeTestKit
import Foundation
import Logging
import Testing
@testable import BrumeModbus

// The slaves are real processes: firmware-sim's libmodbus slaves on a pty or on
// loopback TCP, and pymodbus (an independent implementation) on a socat pty pair
// and on TCP. The bus under test is the one the gateway runs.

/// A firmware-sim Modbus slave: RTU on a pty (returns the line's path) or TCP.
func simSlave(_ dir: String, rtu: Bool, _ args: [String], name: String = "slave", port: Int? = nil) throws -> (Child, ModbusTransport) {
    if rtu {
        let link = "\(dir)/tty-\(name)"
        let child = try Child(TestKit.product("firmware-sim"), ["modbus", "--rtu", link] + args, dir: dir, name: name)
        guard TestKit.waitUntil(timeout: 10, { FileManager.default.fileExists(atPath: link) }) else { throw TestError("no pty: \(child.stderr)") }
        return (child, .rtu(port: .path(link), baud: 115200, parity: "none", dataBits: 8, stopBits: 1, rs485: false))
    }
    let p = port ?? TestKit.freePort()
    let child = try Child(TestKit.product("firmware-sim"), ["modbus", "--tcp", "127.0.0.1:\(p)"] + args, dir: dir, name: name)
    guard TestKit.waitUntil(timeout: 10, { TestKit.canConnect(port: p) }) else { throw TestError("no TCP slave: \(child.stderr)") }
    return (child, .tcp(host: "127.0.0.1", port: p))
}

func pt(_ metric: String, _ table: ModbusTable, _ address: UInt16, _ type: ModbusDataType, _ order: String = "ABCD", poll: Int64 = 200) -> ModbusPoint {
    let (w, b): (ModbusOrder, ModbusOrder) = switch order {
    case "CDAB": (.little, .big)
    case "BADC": (.big, .little)
    case "DCBA": (.little, .little)
    default: (.big, .big)
    }
    return ModbusPoint(metric: metric, table: table, address: address, encoding: ModbusEncoding(type: type, wordOrder: w, byteOrder: b), pollMillis: poll)
}

/// The typed constants every slave (firmware-sim and pymodbus) serves.
let typedPoints: [ModbusPoint] = [
    pt("u16", .holdingRegister, 0, .uint16), pt("i16", .holdingRegister, 1, .int16),
    pt("i32_abcd", .holdingRegister, 2, .int32), pt("i32_cdab", .holdingRegister, 4, .int32, "CDAB"),
    pt("f32_abcd", .holdingRegister, 8, .float32), pt("f32_cdab", .holdingRegister, 10, .float32, "CDAB"),
    pt("f64_abcd", .holdingRegister, 20, .float64), pt("unit", .inputRegister, 28, .uint16),
    pt("coil0", .coil, 0, .bool), pt("coil1", .coil, 1, .bool), pt("di0", .discreteInput, 0, .bool), pt("di1", .discreteInput, 1, .bool),
]

func bus(_ transport: ModbusTransport, _ devices: [ModbusDeviceOptions], sink: CollectingSink, name: String = "bus", maxGap: Int = 0, offlineAfter: Int = 2,
         backoffMax: Int64 = 1000) -> ModbusBus {
    ModbusBus(options: ModbusBusOptions(name: name, transport: transport, devices: devices, interFrameDelayMillis: 2, maxSpan: 125, maxGap: maxGap,
                                        offlineAfter: offlineAfter, backoffMaxMillis: backoffMax), sink: sink, logger: Logger(label: "test"))
}

func latest(_ sink: CollectingSink, device: String, metric: String) -> Value? {
    sink.all.last { $0.device == device && $0.metric == metric }?.value
}

func checkTypedValues(_ sink: CollectingSink, device: String, unit: Int, file: String = #filePath, line: Int = #line) {
    let loc = SourceLocation(fileID: "BrumeModbusTests/ModbusBusTests.swift", filePath: file, line: line, column: 1)
    func num(_ m: String) -> Double? { if case .number(let d)? = latest(sink, device: device, metric: m) { return d } else { return nil } }
    #expect(num("u16") == Double(1000 + unit), sourceLocation: loc)
    #expect(num("i16") == -1234, sourceLocation: loc)
    #expect(num("i32_abcd") == -123456789, sourceLocation: loc)
    #expect(num("i32_cdab") == -123456789, sourceLocation: loc)
    #expect(abs((num("f32_abcd") ?? 0) - 3.14159) < 1e-5, sourceLocation: loc)
    #expect(abs((num("f32_cdab") ?? 0) - 3.14159) < 1e-5, sourceLocation: loc)
    #expect(num("f64_abcd") == 2.718281828459045, sourceLocation: loc)
    #expect(num("unit") == Double(unit), sourceLocation: loc)
    #expect(latest(sink, device: device, metric: "coil0") == .bool(false), sourceLocation: loc)
    #expect(latest(sink, device: device, metric: "coil1") == .bool(true), sourceLocation: loc)
    #expect(latest(sink, device: device, metric: "di0") == .bool(true), sourceLocation: loc)
    #expect(latest(sink, device: device, metric: "di1") == .bool(false), sourceLocation: loc)
}

@Suite(.serialized) struct ModbusBusTests {
    @Test(arguments: [true, false])
    func everyTypeAndOrderFromTheLibmodbusSlave(rtu: Bool) throws {
        let dir = TestKit.tempDir()
        let (slave, transport) = try simSlave(dir, rtu: rtu, ["--units", "1,2"])
        defer { slave.terminate() }
        var points = typedPoints
        points += [pt("u32", .holdingRegister, 6, .uint32), pt("f32_badc", .holdingRegister, 12, .float32, "BADC"),
                   pt("f32_dcba", .holdingRegister, 14, .float32, "DCBA"), pt("i64", .holdingRegister, 16, .int64),
                   pt("f64_dcba", .inputRegister, 24, .float64, "DCBA"), pt("uptime", .inputRegister, 40, .uint16)]
        let sink = CollectingSink()
        let b = bus(transport, [ModbusDeviceOptions(name: "m1", unit: 1, points: points, timeoutMillis: 500, retries: 1),
                                ModbusDeviceOptions(name: "m2", unit: 2, points: points, timeoutMillis: 500, retries: 1)], sink: sink)
        b.start()
        defer { b.stop() }
        #expect(TestKit.waitUntil(timeout: 10) { sink.values(metric: "uptime").count >= 6 })
        checkTypedValues(sink, device: "m1", unit: 1)
        checkTypedValues(sink, device: "m2", unit: 2)
        func num(_ m: String) -> Double? { if case .number(let d)? = latest(sink, device: "m1", metric: m) { return d } else { return nil } }
        #expect(num("u32") == 3_000_000_000)
        #expect(abs((num("f32_badc") ?? 0) - 3.14159) < 1e-5)
        #expect(abs((num("f32_dcba") ?? 0) - 3.14159) < 1e-5)
        #expect(num("i64") == -1_234_567_890_123)
        #expect(num("f64_dcba") == 2.718281828459045)
        // The map changes over time: the slave's uptime register advances.
        let before = num("uptime") ?? 0
        #expect(TestKit.waitUntil(timeout: 5) { (num("uptime") ?? 0) > before })
        // Contiguous points went out as few requests: holding 0-23 in one, input 24-28 and 40 in two, coils, discretes.
        let perCycle = b.plannedBlocks[0].count
        #expect(perCycle <= 6, "\(b.plannedBlocks[0])")
        #expect(b.stats.errors.total == 0, "\(b.stats.errors.snapshot)")
        #expect(b.devices.allSatisfy { $0.health == .online && $0.timeouts == 0 })
    }

    @Test(arguments: [true, false])
    func anIndependentSlavePymodbus(rtu: Bool) throws {
        let dir = TestKit.tempDir()
        let script = fixturesDirectory() + "/pymodbus_slave.py"
        var transport: ModbusTransport
        var children: [Child] = []
        defer { for c in children.reversed() { c.terminate() } }
        if rtu {
            // A pty pair: pymodbus on one end, the bus on the other, like two ends of an RS-485 line.
            let a = "\(dir)/tty-a", bEnd = "\(dir)/tty-b"
            children.append(try Child("/usr/bin/socat", ["pty,raw,echo=0,link=\(a)", "pty,raw,echo=0,link=\(bEnd)"], dir: dir, name: "socat"))
            #expect(TestKit.waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: a) && FileManager.default.fileExists(atPath: bEnd) })
            children.append(try Child("/usr/bin/python3", [script, "--rtu", a, "--units", "1,3"], dir: dir, name: "pymodbus"))
            transport = .rtu(port: .path(bEnd), baud: 115200, parity: "none", dataBits: 8, stopBits: 1, rs485: false)
            #expect(TestKit.waitUntil(timeout: 15) { children[1].stdout.contains("pymodbus slave") })
        } else {
            let port = TestKit.freePort()
            children.append(try Child("/usr/bin/python3", [script, "--tcp", "127.0.0.1:\(port)", "--units", "1,3"], dir: dir, name: "pymodbus"))
            #expect(TestKit.waitUntil(timeout: 15) { TestKit.canConnect(port: port) }, "pymodbus did not start: \(children[0].stderr)")
            transport = .tcp(host: "127.0.0.1", port: port)
        }
        let sink = CollectingSink()
        let b = bus(transport, [ModbusDeviceOptions(name: "p1", unit: 1, points: typedPoints, timeoutMillis: 500, retries: 1),
                                ModbusDeviceOptions(name: "p3", unit: 3, points: typedPoints, timeoutMillis: 500, retries: 1),
                                // No such unit: pymodbus stays silent.
                                ModbusDeviceOptions(name: "p9", unit: 9, points: [pt("u16", .holdingRegister, 0, .uint16)], timeoutMillis: 300, retries: 0)],
                    sink: sink)
        b.start()
        defer { b.stop() }
        #expect(TestKit.waitUntil(timeout: 15) { sink.all.filter { $0.device == "p3" && $0.metric == "di1" }.count >= 3 }, "\(b.stats.errors.snapshot) \(children.last!.stderr.suffix(2000))")
        checkTypedValues(sink, device: "p1", unit: 1)
        checkTypedValues(sink, device: "p3", unit: 3)
        // The silent unit is found offline once its timeouts add up (later on a loaded machine).
        #expect(TestKit.waitUntil(timeout: 15) { b.devices[2].health == .offline && b.devices[2].timeouts > 0 }, "\(b.devices[2])")
        #expect(!sink.all.contains { $0.device == "p9" })
    }

    /// Five devices on one line, one of them dead: the four others keep their
    /// poll interval (the dead one is backed off instead of eating the bus).
    @Test func fiveSlavesOneDeadTheOthersKeepTheirInterval() throws {
        let dir = TestKit.tempDir()
        let (slave, transport) = try simSlave(dir, rtu: true, ["--units", "1,2,3,4"])
        defer { slave.terminate() }
        let sink = CollectingSink()
        // Each poll of a dead device costs timeout × (1 + retries) = 300 ms of bus time, more than the 200 ms poll interval:
        // without backing it off, the line would be saturated and every device late.
        let devices = (1...5).map { u in
            ModbusDeviceOptions(name: "d\(u)", unit: UInt8(u), points: [pt("v", .holdingRegister, 0, .uint16), pt("t", .inputRegister, 40, .uint16)],
                                timeoutMillis: 150, retries: 1)
        }
        let b = bus(transport, devices, sink: sink, offlineAfter: 2, backoffMax: 2000)
        let t0 = wallClockMillis()
        b.start()
        defer { b.stop() }
        Thread.sleep(forTimeInterval: 6)
        let all = sink.all
        for u in 1...4 {
            let times = all.filter { $0.device == "d\(u)" && $0.metric == "v" && $0.time > t0 + 2000 }.map(\.time)
            let gaps = zip(times.dropFirst(), times).map { Double($0 - $1) }.sorted()
            #expect(times.count >= 18, "d\(u) read \(times.count) times in 4 s at a 200 ms interval")
            let median = gaps.isEmpty ? 0 : gaps[gaps.count / 2]
            #expect(median >= 185 && median <= 215, "d\(u) median interval \(median) ms")
            // A probe of the dead device delays a poll by at most one timeout.
            #expect((gaps.last ?? 0) <= 200 + 150 + 40, "d\(u) longest interval \(gaps.last ?? 0) ms")
        }
        let dead = b.devices[4]
        #expect(dead.health == .offline)
        #expect(dead.timeouts >= 3)
        #expect(dead.timeouts < 20, "the dead device is probed, not polled: \(dead.timeouts) timeouts in 6 s")
        // Failed polls by reason (the source's errors) and timed-out requests, retries included (the device's).
        #expect(b.stats.errors["timeout"] > 0 && b.stats.errors["timeout"] <= dead.timeouts)
        #expect(!all.contains { $0.device == "d5" })
        for d in b.devices.prefix(4) {
            #expect(d.health == .online && d.timeouts == 0, "\(d)")
            #expect(d.overruns <= 2, "only the start-up, while the dead device is not yet known, may make a poll late: \(d)")
        }
    }

    @Test func aDeadDeviceIsProbedAndComesBack() throws {
        let dir = TestKit.tempDir()
        let port = TestKit.freePort()
        var (slave, transport) = try simSlave(dir, rtu: false, ["--units", "1"], port: port)
        let sink = CollectingSink()
        let devices = [1, 2].map { u in ModbusDeviceOptions(name: "d\(u)", unit: UInt8(u), points: [pt("v", .holdingRegister, 0, .uint16)], timeoutMillis: 100, retries: 0) }
        let b = bus(transport, devices, sink: sink, offlineAfter: 2, backoffMax: 500)
        b.start()
        defer { b.stop() }
        #expect(TestKit.waitUntil(timeout: 5) { b.devices[1].health == .offline })
        // The slave restarts, now with unit 2: the bus reconnects and the probe finds it.
        slave.terminate()
        _ = slave.wait(timeout: 5)
        #expect(TestKit.waitUntil(timeout: 5) { b.stats.errors["io_error"] > 0 || b.state == .disconnected })
        (slave, _) = try simSlave(dir, rtu: false, ["--units", "1,2"], name: "slave2", port: port)
        defer { slave.terminate() }
        #expect(TestKit.waitUntil(timeout: 5) { b.devices[1].health == .online })
        #expect(TestKit.waitUntil(timeout: 3) { sink.values(metric: "v").contains(1002) })
        #expect(b.state == .connected)
    }

    @Test func exceptionsAreNamedCountedAndPerPoint() throws {
        let dir = TestKit.tempDir()
        let (slave, transport) = try simSlave(dir, rtu: true, ["--units", "1", "--busy-unit", "7"])
        defer { slave.terminate() }
        let sink = CollectingSink()
        // 99 exists, 100 does not: merged into one request (max_gap), the device refuses it;
        // the bus then reads them one by one so the error lands on "missing" only.
        let pts = [pt("ok", .holdingRegister, 99, .uint16), pt("missing", .holdingRegister, 100, .uint16), pt("coil_missing", .coil, 40, .bool)]
        let b = bus(transport, [ModbusDeviceOptions(name: "m", unit: 1, points: pts, timeoutMillis: 300, retries: 1),
                                ModbusDeviceOptions(name: "busy", unit: 7, points: [pt("x", .holdingRegister, 0, .uint16)], timeoutMillis: 300, retries: 1)],
                    sink: sink, maxGap: 4)
        b.start()
        defer { b.stop() }
        #expect(TestKit.waitUntil(timeout: 5) { sink.all.filter { $0.metric == "ok" }.count >= 3 })
        #expect(TestKit.waitUntil(timeout: 5) { b.stats.errors["illegal_data_address"] >= 4 })
        let m = b.devices[0]
        #expect(m.pointErrors["missing"]?.contains("exception 2") == true, "\(m.pointErrors)")
        #expect(m.pointErrors["missing"]?.contains("illegal data address") == true)
        #expect(m.pointErrors["coil_missing"] != nil)
        #expect(m.pointErrors["ok"] == nil)
        #expect(m.health == .online, "a device that answers with exceptions is alive")
        #expect(m.exceptions[2, default: 0] >= 4)
        #expect(b.stats.errors["device_busy"] >= 2)
        #expect(b.devices[1].exceptions[6, default: 0] >= 2)
        #expect(b.devices[1].health == .online)
        #expect(!sink.all.contains { $0.metric == "missing" || $0.device == "busy" })
    }

    @Test func garbageOnTheLineIsCountedAndTheOthersKeepReading() throws {
        let dir = TestKit.tempDir()
        let (slave, transport) = try simSlave(dir, rtu: true, ["--units", "1", "--garbage-unit", "9"])
        defer { slave.terminate() }
        let sink = CollectingSink()
        let b = bus(transport, [ModbusDeviceOptions(name: "good", unit: 1, points: [pt("v", .holdingRegister, 0, .uint16)], timeoutMillis: 200, retries: 1),
                                ModbusDeviceOptions(name: "noisy", unit: 9, points: [pt("v", .holdingRegister, 0, .uint16)], timeoutMillis: 200, retries: 1)],
                    sink: sink, offlineAfter: 1000)
        b.start()
        defer { b.stop() }
        Thread.sleep(forTimeInterval: 3)
        #expect(sink.all.filter { $0.device == "good" }.count >= 10)
        #expect(sink.all.allSatisfy { $0.device == "good" && $0.value == .number(1001) }, "no garbage became a reading")
        let noisy = b.devices[1]
        #expect(noisy.badResponses + noisy.timeouts >= 5, "\(noisy)")
        #expect(b.stats.errors["crc_error"] + b.stats.errors["bad_response"] + b.stats.errors["timeout"] >= 3, "\(b.stats.errors.snapshot)")
    }

    @Test func writesCoilsRegistersAndFloatsWithReadBack() async throws {
        let dir = TestKit.tempDir()
        let (slave, transport) = try simSlave(dir, rtu: true, ["--units", "1", "--write-log", "\(dir)/writes.log"])
        defer { slave.terminate() }
        let sink = CollectingSink()
        let b = bus(transport, [ModbusDeviceOptions(name: "m", unit: 1, points: [pt("setpoint", .holdingRegister, 50, .float32), pt("relay", .coil, 5, .bool)],
                                                    timeoutMillis: 300, retries: 1)], sink: sink)
        b.start()
        defer { b.stop() }
        #expect(TestKit.waitUntil(timeout: 5) { b.state == .connected })
        let relay = ModbusWriteSpec(unit: 1, device: "m", table: .coil, address: 5, encoding: ModbusEncoding(type: .bool), readBack: true)
        let r1 = await b.write(relay, items: try relay.items(for: .bool(false)).get(), timeout: .seconds(2))
        #expect((try? r1.get())?.contains("read back") == true, "\(r1)")
        var f32 = ModbusEncoding(type: .float32)
        f32.wordOrder = .little
        let setpoint = ModbusWriteSpec(unit: 1, device: "m", table: .holdingRegister, address: 52, encoding: f32, readBack: true)
        let r2 = await b.write(setpoint, items: try setpoint.items(for: .number(21.5)).get(), timeout: .seconds(2))
        #expect((try? r2.get()) != nil, "\(r2)")
        let single = ModbusWriteSpec(unit: 1, device: "m", table: .holdingRegister, address: 55, encoding: ModbusEncoding(type: .uint16, scale: 0.1),
                                     readBack: false, values: ["low": 10, "high": 50])
        let r3 = await b.write(single, items: try single.items(for: .string("high")).get(), timeout: .seconds(2))
        #expect((try? r3.get()) != nil, "\(r3)")
        // A register that does not keep what is written: the read-back says so.
        let stuck = ModbusWriteSpec(unit: 1, device: "m", table: .holdingRegister, address: 60, encoding: ModbusEncoding(type: .uint16), readBack: true)
        let r4 = await b.write(stuck, items: [7], timeout: .seconds(2))
        guard case .failure(let f4) = r4 else { Issue.record("read-back mismatch not detected"); return }
        #expect("\(f4)".contains("read back 0x0bad"), "\(f4)")
        // An address the device does not have.
        let bad = ModbusWriteSpec(unit: 1, device: "m", table: .holdingRegister, address: 300, encoding: ModbusEncoding(type: .uint16), readBack: false)
        #expect(await b.write(bad, items: [1], timeout: .seconds(2)) == .failure(.exception(2)))
        // What the device saw, in order: coil 5 ← 0, registers 52-53 ← 21.5 CDAB (one "write multiple"), 55 ← 500, 60 ← 7.
        let log = (try? String(contentsOfFile: "\(dir)/writes.log", encoding: .utf8)) ?? ""
        let lines = log.split(separator: "\n").map(String.init)
        #expect(lines.first == "unit=1 fc=5 address=5 values=0", "\(lines)")
        #expect(lines.contains("unit=1 fc=16 address=52 values=\(0x0000),\(0x41AC)"), "\(lines)")
        #expect(lines.contains("unit=1 fc=6 address=55 values=500"), "\(lines)")
        // The polled value follows: the bus reads back the coil it wrote as a reading too.
        #expect(TestKit.waitUntil(timeout: 3) { latest(sink, device: "m", metric: "relay") == .bool(false) })
    }

    /// On the dedicated test thread: the cooperative pool is shared with blocking end-to-end
    /// tests, and a write's continuation waiting for a free pool thread is not the bus's latency.
    @Test func writesGoAheadOfPolls() async throws {
        try await onDedicatedThread {
            let dir = TestKit.tempDir()
            let (slave, transport) = try simSlave(dir, rtu: true, ["--units", "1,2,3"])
            defer { slave.terminate() }
            let sink = CollectingSink()
            // A busy bus: three devices polled as fast as the line allows.
            let devices = (1...3).map { u in ModbusDeviceOptions(name: "d\(u)", unit: UInt8(u), points: typedPoints, timeoutMillis: 300, retries: 1) }
            let b = ModbusBus(options: ModbusBusOptions(name: "b", transport: transport, devices: devices.map { d in
                var d = d
                d.points = d.points.map { var p = $0; p.pollMillis = 10; return p }
                return d
            }), sink: sink, logger: Logger(label: "test"))
            b.start()
            defer { b.stop() }
            #expect(TestKit.waitUntil(timeout: 5) { sink.all.count > 100 })
            let spec = ModbusWriteSpec(unit: 2, device: "d2", table: .holdingRegister, address: 50, encoding: ModbusEncoding(type: .uint16), readBack: true)
            var worst = 0.0
            for i in 0..<20 {
                let t0 = monotonicNanos()
                let r = await b.write(spec, items: [UInt16(i)], timeout: .seconds(2))
                #expect((try? r.get()) != nil, "\(r)")
                worst = max(worst, Double(monotonicNanos() - t0) / 1e6)
            }
            // At most the transaction in progress, the write and its read-back: tens of ms, never a whole poll cycle backlog.
            #expect(worst < 250, "slowest write took \(worst) ms")
        }
    }

    @Test func theBusReconnectsWhenTheLineComesBack() throws {
        let dir = TestKit.tempDir()
        var (slave, transport) = try simSlave(dir, rtu: true, ["--units", "1"])
        let sink = CollectingSink()
        let b = bus(transport, [ModbusDeviceOptions(name: "m", unit: 1, points: [pt("v", .holdingRegister, 0, .uint16)], timeoutMillis: 200, retries: 0)], sink: sink)
        b.start()
        defer { b.stop() }
        #expect(TestKit.waitUntil(timeout: 5) { sink.all.count >= 3 })
        slave.kill9()
        _ = slave.wait(timeout: 5)
        #expect(TestKit.waitUntil(timeout: 5) { b.state == .disconnected || b.devices[0].health == .offline })
        let before = sink.all.count
        (slave, _) = try simSlave(dir, rtu: true, ["--units", "1"])
        defer { slave.terminate() }
        #expect(TestKit.waitUntil(timeout: 8) { sink.all.count >= before + 3 }, "readings resume after the line returns: \(b.stats.errors.snapshot)")
    }
}
