@testable import BrumeRuntime
import BrumeTestKit
import Foundation
import Testing

/// Prometheus's own tool, as CI installs it (scripts/install-deps.sh: promtool from Debian's
/// `prometheus` package, without the server).
func promtool() throws -> String {
    let found = ["/usr/local/bin/promtool", "/usr/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }
    return try #require(found, "promtool is not installed: run scripts/install-deps.sh")
}

/// Runs promtool with `args` in `dir` (stdin from `input` when given); exit status and output.
func runPromtool(_ args: [String], dir: String, input: String? = nil) throws -> (Int32, String) {
    let tmp = TestKit.tempDir("promtool")
    var argv = [try promtool()] + args
    if let input {
        try input.write(toFile: "\(tmp)/input", atomically: true, encoding: .utf8)
        argv = ["/bin/sh", "-c", "cd '\(dir)' && '\(argv[0])' \(args.map { "'\($0)'" }.joined(separator: " ")) < '\(tmp)/input'"]
    } else {
        argv = ["/bin/sh", "-c", "cd '\(dir)' && " + argv.map { "'\($0)'" }.joined(separator: " ")]
    }
    let c = try Child(argv[0], Array(argv.dropFirst()), dir: tmp, name: "promtool")
    let code = c.wait(timeout: 60) ?? -1
    return (code, c.stdout + c.stderr)
}

private let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

@Suite struct AlertRulesTests {
    @Test func rulesAreValidAndTheirUnitTestsPass() throws {
        let dir = repositoryRoot + "/deploy/prometheus"
        let (checkCode, checkOut) = try runPromtool(["check", "rules", "brume-alerts.yml"], dir: dir)
        #expect(checkCode == 0, "\(checkOut)")
        let (testCode, testOut) = try runPromtool(["test", "rules", "brume-alerts.test.yml"], dir: dir)
        #expect(testCode == 0 && testOut.contains("SUCCESS"), "\(testOut)")
    }

    /// Every brume_* name the dashboard and the alert rules query is one the gateway exports.
    @Test func dashboardAndRulesUseExportedNames() throws {
        var exported = Set(MetricsExporter.help.keys)
        exported.insert("brume_uplink_publish_latency_seconds") // a swift-metrics Timer
        for file in ["deploy/grafana/brume-dashboard.json", "deploy/prometheus/brume-alerts.yml"] {
            let text = try String(contentsOfFile: repositoryRoot + "/" + file, encoding: .utf8)
            let names = Set(text.matches(of: /brume_[a-z0-9_]+/).map { String($0.output) })
            #expect(names.count >= 8, "\(file): \(names)")
            for n in names {
                let base = ["_bucket", "_sum", "_count"].reduce(n) { $0.hasSuffix($1) ? String($0.dropLast($1.count)) : $0 }
                #expect(exported.contains(n) || exported.contains(base), "\(file) queries \(n), which brume does not export")
            }
        }
    }

    /// The histograms kept as bucket counts (Modbus response times) in the exposition format:
    /// cumulative buckets, sum and count, escaped labels; promtool accepts them.
    @Test func histogramExposition() throws {
        var out: [UInt8] = []
        MetricsExporter.appendHistograms([
            (labels: [("gateway", "gw-1"), ("source", "bus"), ("device", #"a "b"\c"#)],
             DeviceDetails.Histogram(name: "brume_modbus_latency_seconds", bounds: [0.01, 0.1], counts: [3, 2, 1], sum: 0.75)),
            (labels: [("gateway", "gw-1"), ("source", "bus"), ("device", "d2")],
             DeviceDetails.Histogram(name: "brume_modbus_latency_seconds", bounds: [0.01, 0.1], counts: [0, 0, 0], sum: 0)),
        ], to: &out)
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.hasPrefix("# HELP brume_modbus_latency_seconds Modbus response times of a device (answered requests).\n# TYPE brume_modbus_latency_seconds histogram\n"))
        #expect(text.contains(#"brume_modbus_latency_seconds_bucket{gateway="gw-1",source="bus",device="a \"b\"\\c",le="0.1"} 5"#))
        #expect(text.contains(#"brume_modbus_latency_seconds_bucket{gateway="gw-1",source="bus",device="a \"b\"\\c",le="+Inf"} 6"#))
        #expect(text.contains(#"brume_modbus_latency_seconds_count{gateway="gw-1",source="bus",device="a \"b\"\\c"} 6"#))
        #expect(text.components(separatedBy: "# TYPE").count == 2, "one TYPE line per name")
        let (code, msg) = try runPromtool(["check", "metrics"], dir: "/", input: text)
        #expect(code == 0, "\(msg)")
    }
}
