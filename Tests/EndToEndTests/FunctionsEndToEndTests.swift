import BrumeCore
import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Fog functions (docs/functions.md) in a real gateway: modules built from source with the
/// toolchain's clang and wabt, readings through a real Mosquitto, the cloud's view.
@Suite(.serialized) struct FunctionsEndToEndTests {
    /// Publishes each line of `lines` as one message on `topic` (mosquitto_pub -l, the C client).
    func publish(_ rig: Rig, _ topic: String, _ lines: [String]) throws {
        let file = "\(rig.dir)/pub-\(UUID().uuidString.prefix(6)).txt"
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let p = try Child("/bin/sh", ["-c", "/usr/bin/mosquitto_pub -h 127.0.0.1 -p \(rig.field.port) -q 1 -t '\(topic)' -l < '\(file)'"],
                          dir: rig.dir, name: "pub-\(UUID().uuidString.prefix(6))")
        guard p.wait(timeout: 20) == 0 else { throw TestError("mosquitto_pub failed: \(p.stderr)") }
    }

    func numbers(_ cloud: TelemetryCollector, _ device: String, _ metric: String) -> [Double] {
        cloud.readings.withLock { $0 }.filter { $0.device == device && $0.metric == metric }.compactMap { if case .number(let d) = $0.value { d } else { nil } }
    }

    func function(_ status: JSONValue, _ name: String) -> JSONValue? {
        status["functions"]?.elements.first { $0["name"]?.string == name }
    }

    /// A C function's derived metric reaches the cloud; an endless loop and an out-of-bounds
    /// access in another function are stopped, counted and their readings handled by its
    /// policy (pass) while every other reading flows.
    @Test func aCFunctionsMetricReachesTheCloudWhileLoopsAndTrapsAreContained() throws {
        let rig = try Rig(extraSources: { dir in
            try? FileManager.default.createDirectory(atPath: "\(dir)/functions", withIntermediateDirectories: true)
            _ = try? WasmBuild.c("pump_efficiency", out: "\(dir)/functions/pump.wasm")
            _ = try? WasmBuild.wat(fixturesDirectory() + "/functions/hostile.wat", out: "\(dir)/functions/hostile.wasm")
            return """
            [[function]]
            name = "pump-efficiency"
            module = "functions/pump.wasm"
            run = "reading"
            match = "pump-*/flow"

            [[function]]
            name = "hostile"
            module = "functions/hostile.wasm"
            run = "reading"
            match = "lab/*"
            fuel = 50000
            on_error = "pass"
            """
        })
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway()
        let t0 = Int64(Date().timeIntervalSince1970 * 1000)
        let flows = [12.0, 24, 36, 48, 60]
        try publish(rig, "load/pump-1/flow", flows.enumerated().map { #"{"v":\#($1),"ts":\#(t0 + Int64($0))}"# })
        // 1: endless loop, 2: out of bounds, others doubled; interleaved with good ones.
        let lab = [21.0, 1, 22, 2, 23, 1, 24]
        try publish(rig, "load/lab/m", lab.enumerated().map { #"{"v":\#($1),"ts":\#(t0 + Int64($0))}"# })
        #expect(TestKit.waitUntil(timeout: 20) { numbers(cloud, "pump-1", "efficiency").count == 5 && numbers(cloud, "lab", "m").count == 7 },
                "\(cloud.readings.withLock { $0 }.map { "\($0.device)/\($0.metric)=\($0.value)" })")
        #expect(numbers(cloud, "pump-1", "flow") == flows, "the input goes on (BRUME_KEEP)")
        let expected = flows.map { 100.0 * (1000.0 * 9.81 * ($0 / 3600.0) * 32.0 / 1000.0) / 5.5 }
        #expect(zip(numbers(cloud, "pump-1", "efficiency"), expected).allSatisfy { abs($0 - $1) < 1e-9 }, "\(numbers(cloud, "pump-1", "efficiency"))")
        #expect(numbers(cloud, "lab", "m").sorted() == [1, 1, 2, 42, 44, 46, 48], "failed calls pass the reading unchanged; the others are computed")
        let m = try TestHTTP.request(port: rig.apiPort, path: "/metrics").body
        #expect(metric(m, #"brume_function_failures_total{function="hostile",reason="out_of_fuel"}"#) == 2, "\(m.split(separator: "\n").filter { $0.contains("function") })")
        #expect(metric(m, #"brume_function_failures_total{function="hostile",reason="trap"}"#) == 1)
        #expect(metric(m, #"brume_function_calls_total{function="hostile"}"#) == 7)
        #expect(metric(m, #"brume_function_calls_total{function="pump-efficiency"}"#) == 5)
        #expect(metric(m, #"brume_function_disabled{function="hostile"}"#) == 0)
        let st = try statusJSON(rig)
        let hostile = function(st, "hostile")
        #expect(hostile?["restarts"]?.number == 3 && hostile?["run"]?.string == "reading", "\(String(describing: hostile))")
        #expect(hostile?["last_error"]?.string?.contains("out of bounds") == true || hostile?["last_error"]?.string?.contains("fuel") == true)
        #expect(rig.gateway!.stderr.contains("function call failed"), "logged (rate-limited)")
        rig.gateway!.terminate()
        #expect(rig.gateway!.wait(timeout: 20) == 0, "the gateway never stops for a function")
    }

    /// `brume check`: a module over its memory cap, a missing module, a module with a WASI
    /// import — errors at the module key, naming the file.
    @Test func badModulesAreCheckErrorsNamingTheirFile() throws {
        let dir = TestKit.tempDir("brume-fn-check")
        try FileManager.default.createDirectory(atPath: "\(dir)/functions", withIntermediateDirectories: true)
        try WasmBuild.wat("""
        (module (memory (export "memory") 48)
          (func (export "brume_buffer") (result i32) (i32.const 0)) (func (export "brume_buffer_size") (result i32) (i32.const 4096))
          (func (export "brume_reading") (param i32) (result i32) (i32.const 1)))
        """, out: "\(dir)/functions/hungry.wasm")
        try WasmBuild.wat("""
        (module (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "brume_buffer") (result i32) (i32.const 0)) (func (export "brume_buffer_size") (result i32) (i32.const 4096))
          (func (export "brume_reading") (param i32) (result i32) (i32.const 1)))
        """, out: "\(dir)/functions/clock.wasm")
        try """
        [gateway]
        id = "gw-fn"
        data_dir = "\(dir)/var"

        [uplink.cloud]
        kind = "mqtt"
        url = "mqtt://127.0.0.1:1"

        [[function]]
        name = "hungry"
        module = "functions/hungry.wasm"
        run = "reading"
        match = "*/*"
        memory = "2MiB"

        [[function]]
        name = "gone"
        module = "functions/gone.wasm"
        run = "reading"
        match = "*/*"

        [[function]]
        name = "clock"
        module = "functions/clock.wasm"
        run = "reading"
        match = "*/*"
        """.write(toFile: "\(dir)/gateway.toml", atomically: true, encoding: .utf8)
        let c = try Child(TestKit.product("brume"), ["check", "\(dir)/gateway.toml"], dir: dir, name: "check")
        #expect(c.wait(timeout: 30) == 1)
        let out = c.stdout + c.stderr
        #expect(out.contains(#"gateway.toml:11:10: [[function]] "hungry": module "functions/hungry.wasm": "#) && out.contains("memory = 2048 KiB allows 32 pages"), "\(out)")
        #expect(out.contains(#"gateway.toml:18:10: [[function]] "gone": module "functions/gone.wasm": No such file or directory"#), "\(out)")
        #expect(out.contains(#"module "functions/clock.wasm": imports wasi_snapshot_preview1.clock_time_get"#), "\(out)")
    }

    /// A reload swaps a module (the new one checked first) without losing the open window of an
    /// unchanged rule: the window's average mixes readings computed by both modules.
    @Test func aReloadSwapsAModuleAndKeepsTheWindowsOfUnchangedRules() throws {
        let rig = try Rig(extraSources: { dir in
            try? FileManager.default.createDirectory(atPath: "\(dir)/functions", withIntermediateDirectories: true)
            _ = try? WasmBuild.wat("calibrate", out: "\(dir)/functions/cal.wasm")
            return """
            [[function]]
            name = "cal"
            module = "functions/cal.wasm"
            run = "reading"
            match = "lab/ph"

            [[rule]]
            name = "avg10"
            match = "lab/ph"
            window = { kind = "count", count = 10 }
            emit = ["avg", "count"]
            """
        })
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway()
        let g = rig.gateway!
        let t0 = Int64(Date().timeIntervalSince1970 * 1000)
        try publish(rig, "load/lab/ph", (0..<6).map { #"{"v":10,"ts":\#(t0 + Int64($0))}"# })
        func ruleIn() -> Double? { (try? statusJSON(rig))?["rules"]?.elements.first { $0["name"]?.string == "avg10" }?["in"]?.number }
        #expect(TestKit.waitUntil(timeout: 20) { ruleIn() == 6 })
        let before = function(try statusJSON(rig), "cal")?["sha256"]?.string
        // A broken module first: the reload is refused, the old one keeps running.
        try Data([0, 97, 115, 109, 1, 0, 0, 0, 1]).write(to: URL(fileURLWithPath: "\(rig.dir)/functions/cal.wasm"))
        g.signal(SIGHUP)
        #expect(TestKit.waitUntil(timeout: 10) { g.stderr.contains("reload rejected") }, "\(g.stderr.suffix(1500))")
        try WasmBuild.wat("""
        (module
          (import "env" "brume_emit" (func $emit (param i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "brume_buffer") (result i32) (i32.const 1024))
          (func (export "brume_buffer_size") (result i32) (i32.const 4096))
          (func (export "brume_reading") (param $n i32) (result i32)
            (f64.store (i32.const 1032) (f64.mul (f64.load (i32.const 1032)) (f64.const 2)))
            (drop (call $emit (i32.const 1024)))
            (i32.const 0)))
        """, out: "\(rig.dir)/functions/cal.wasm")
        g.signal(SIGHUP)
        #expect(TestKit.waitUntil(timeout: 10) { g.stderr.contains("configuration reloaded") }, "\(g.stderr.suffix(1500))")
        let after = function(try statusJSON(rig), "cal")?["sha256"]?.string
        #expect(before != nil && after != nil && before != after, "the new module runs")
        try publish(rig, "load/lab/ph", (6..<10).map { #"{"v":10,"ts":\#(t0 + Int64($0))}"# })
        #expect(TestKit.waitUntil(timeout: 20) { !numbers(cloud, "lab", "ph.count").isEmpty })
        #expect(numbers(cloud, "lab", "ph.count") == [10], "one window of ten: the six before the reload were kept")
        let calibrated: Double = 10 * 1.0125 - 0.42
        let avg: Double = (6 * calibrated + 4 * 20) / 10
        let got: [Double] = numbers(cloud, "lab", "ph.avg")
        #expect(got.count == 1 && abs((got.first ?? 0) - avg) < 1e-9, "\(got) vs \(avg)")
    }

    /// A vendor's binary frames decoded by a C function feed an MQTT source; a corrupt frame is
    /// refused, counted at the source and dead-lettered, and `brume fn test` replays it.
    @Test func aWASMDecoderFeedsAnMQTTSource() throws {
        let rig = try Rig(extraSources: { dir in
            try? FileManager.default.createDirectory(atPath: "\(dir)/functions", withIntermediateDirectories: true)
            _ = try? WasmBuild.c("vendor_decoder", out: "\(dir)/functions/tank.wasm")
            return """
            [[function]]
            name = "tank"
            module = "functions/tank.wasm"
            run = "decoder"

            [[source]]
            name = "tanks"
            kind = "mqtt"
            url = "FIELD_URL"
            subscribe = ["tanks/+"]
            device = "{1}"
            payload = { function = "tank" }
            """
        })
        let cloud = try TelemetryCollector(port: rig.cloud.port)
        try rig.startGateway(ready: "source.name=tanks")
        func frame(level: UInt16, temp: Int16, battery: UInt8, lid: Bool, corrupt: Bool = false) -> [UInt8] {
            let t = UInt16(bitPattern: temp)
            var p: [UInt8] = [0x01, UInt8(level >> 8), UInt8(level & 0xFF)]
            p += [UInt8(t >> 8), UInt8(t & 0xFF), battery, lid ? 1 : 0]
            var crc: UInt16 = 0xFFFF
            for b in p {
                crc ^= UInt16(b)
                for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
            }
            if corrupt { crc ^= 0x100 }
            p += [UInt8(crc & 0xFF), UInt8(crc >> 8)]
            return p
        }
        let frames = [frame(level: 250, temp: 187, battery: 90, lid: false), frame(level: 0x0A20, temp: -35, battery: 32, lid: true),
                      frame(level: 7, temp: 7, battery: 7, lid: false, corrupt: true)]
        for (i, f) in frames.enumerated() {
            try Data(f).write(to: URL(fileURLWithPath: "\(rig.dir)/frame\(i).bin"))
            let p = try Child("/usr/bin/mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(rig.field.port)", "-q", "1", "-t", "tanks/tank-\(i)", "-f", "\(rig.dir)/frame\(i).bin"],
                              dir: rig.dir, name: "pub-frame-\(i)")
            #expect(p.wait(timeout: 10) == 0)
        }
        #expect(TestKit.waitUntil(timeout: 20) { cloud.readings.withLock { $0 }.filter { $0.device.hasPrefix("tank-") }.count == 8 })
        #expect(numbers(cloud, "tank-0", "level") == [2.5] && numbers(cloud, "tank-0", "temperature") == [18.7] && numbers(cloud, "tank-0", "battery") == [90])
        #expect(numbers(cloud, "tank-1", "level") == [Double(0x0A20) / 100] && numbers(cloud, "tank-1", "temperature") == [-3.5])
        #expect(cloud.readings.withLock { $0 }.first { $0.device == "tank-1" && $0.metric == "lid_open" }?.value == .bool(true))
        #expect(cloud.readings.withLock { $0 }.filter { $0.device == "tank-2" }.isEmpty, "a corrupt frame gives no reading")
        let st = try statusJSON(rig)
        #expect(source(st, "tanks")?["errors"]?["function_failed"]?.number == 1, "\(String(describing: source(st, "tanks")))")
        let deadLetters = "\(rig.dir)/var/dead-letter/tank.jsonl"
        let dl = (try? String(contentsOfFile: deadLetters, encoding: .utf8)) ?? ""
        #expect(dl.contains(#""device":"tank-2""#) && dl.contains(#""payload_base64":"\#(Base64.encode(frames[2]))""#) && dl.contains(#""reason":"error_code""#), "\(dl)")
        // The technician replays the dead letter: the same refusal (CRC: the function's -4).
        let fnTest = try Child(TestKit.product("brume"), ["fn", "test", "\(rig.dir)/functions/tank.wasm", "--input", deadLetters], dir: rig.dir, name: "fn-test")
        #expect(fnTest.wait(timeout: 30) == 1)
        #expect(fnTest.stderr.contains("error code -4") && fnTest.stderr.contains("(decoder,") && fnTest.stderr.contains("1 input, 1 call, 0 outputs, 1 failed (error_code 1)"), "\(fnTest.stderr)")
        // And a good frame as hex: four readings on standard output.
        try #"{"device":"tank-9","time":1764000000000,"payload_hex":"\#(frames[0].map { String(format: "%02x", $0) }.joined())"}"#.write(toFile: "\(rig.dir)/good.jsonl", atomically: true, encoding: .utf8)
        let ok = try Child(TestKit.product("brume"), ["fn", "test", "\(rig.dir)/functions/tank.wasm", "--input", "\(rig.dir)/good.jsonl"], dir: rig.dir, name: "fn-test-ok")
        #expect(ok.wait(timeout: 30) == 0, "\(ok.stderr)")
        #expect(ok.stdout.split(separator: "\n") == [
            #"{"device":"tank-9","metric":"level","time":1764000000000,"value":2.5}"#,
            #"{"device":"tank-9","metric":"temperature","time":1764000000000,"value":18.7}"#,
            #"{"device":"tank-9","metric":"battery","time":1764000000000,"value":90}"#,
            #"{"device":"tank-9","metric":"lid_open","time":1764000000000,"value":false}"#,
        ], "\(ok.stdout)")
    }
}
