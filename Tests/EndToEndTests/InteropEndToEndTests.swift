import BrumeCore
import BrumeTestKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A northbound peer from PyPI (paho-mqtt, pysparkplug) recording what it receives as JSON lines.
final class Recorder {
    let child: Child
    let out: String
    init(rig: Rig, port: Int, topic: String, name: String, sparkplug: Bool = false, v5: Bool = false) throws {
        out = "\(rig.dir)/\(name).jsonl"
        let ready = "\(rig.dir)/\(name).ready"
        child = try Child("/usr/bin/env", ["python3", fixturesDirectory() + "/interop_peer.py", "record", "--port", "\(port)", "--topic", topic,
                                           "--out", out, "--ready", ready, "--client-id", name] + (sparkplug ? ["--sparkplug"] : []) + (v5 ? ["--v5"] : []),
                          dir: rig.dir, name: name)
        guard TestKit.waitUntil(timeout: 20, { FileManager.default.fileExists(atPath: ready) }) else {
            throw TestError("\(name) did not subscribe: \(child.stderr)")
        }
    }
    var lines: [JSONValue] {
        ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }
    }
    deinit { child.terminate(); _ = child.wait(timeout: 5) }
}

/// Runs the peer script once (publish, commands) and waits for it.
func peer(_ rig: Rig, _ args: [String]) throws {
    let c = try Child("/usr/bin/env", ["python3", fixturesDirectory() + "/interop_peer.py"] + args, dir: rig.dir, name: "peer-\(args[0])")
    guard c.wait(timeout: 30) == 0 else { throw TestError("interop_peer \(args): \(c.stderr)") }
}

/// Readings published to the field broker (topic `load/{device}/{metric}`, JSON `{"v":..,"ts":..}`).
struct FieldReading {
    var device: String, metric: String, value: Value, ts: Int64
}

func publishField(_ rig: Rig, _ readings: [FieldReading], name: String = "pub") throws {
    var text = ""
    for r in readings {
        var v: [UInt8] = []
        WireFormat.appendValue(r.value, to: &v)
        let payload = "{\"v\":\(String(decoding: v, as: UTF8.self)),\"ts\":\(r.ts)}"
        var line: [UInt8] = Array("{\"topic\":".utf8)
        WireFormat.appendString("load/\(r.device)/\(r.metric)", to: &line)
        line.append(contentsOf: ",\"payload\":".utf8)
        WireFormat.appendString(payload, to: &line)
        line.append(UInt8(ascii: "}"))
        text += String(decoding: line, as: UTF8.self) + "\n"
    }
    let path = "\(rig.dir)/\(name).jsonl"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    try peer(rig, ["publish", "--port", "\(rig.field.port)", "--input", path])
}

func sampleReadings(from i0: Int, count: Int, base: Int64) -> [FieldReading] {
    (i0..<(i0 + count)).flatMap { i -> [FieldReading] in
        let t = base + Int64(i) * 10
        return [FieldReading(device: "boiler", metric: "temp", value: .number(20 + Double(i) * 0.25), ts: t),
                FieldReading(device: "boiler", metric: "state", value: .string(i % 2 == 0 ? "heating" : "idle"), ts: t),
                FieldReading(device: "door", metric: "open", value: .bool(i % 3 == 0), ts: t)]
    }
}

func jsonValue(_ v: Value) -> JSONValue {
    switch v {
    case .number(let d): return .number(d)
    case .bool(let b): return .bool(b)
    case .string(let s): return .string(s)
    }
}

extension JSONValue {
    var members: [JSONMember] { if case .object(let m) = self { return m }; return [] }
}

@Suite(.serialized) struct InteropEndToEndTests {
    static let actuator = """
        [[actuator]]
        name = "boiler/setpoint"
        via = "load"
        topic = "actuators/setpoint/set"
        range = [0, 100]
        [[actuator]]
        name = "boiler/valve"
        via = "load"
        topic = "actuators/valve/set"
        accepts = ["open", "close"]
        """

    /// A Sparkplug B host (pysparkplug) sees NBIRTH, then a DBIRTH per device before its data,
    /// the values read with their names, types and times, seq without gaps; a rebirth on request;
    /// a DCMD write run once through the command path; the backlog of a cloud outage marked
    /// historical after a new birth; NDEATH with the session's bdSeq when the gateway dies.
    @Test func sparkplugEdgeNodeToAnIndependentHost() throws {
        let rig = try Rig(extraSources: { _ in Self.actuator }, uplinkExtra: """
            format = "sparkplug_b"
            group_id = "plant"
            sparkplug_commands = true
            historical_after = "5s"
            """)
        let host = try Recorder(rig: rig, port: rig.cloud.port, topic: "spBv1.0/#", name: "spb-host", sparkplug: true)
        // What the edge node published (the host's own NCMD/DCMD come back to its recorder too).
        func node(_ lines: [JSONValue]) -> [JSONValue] { lines.filter { !["NCMD", "DCMD"].contains($0["type"]?.string ?? "") } }
        let field = try Recorder(rig: rig, port: rig.field.port, topic: "actuators/#", name: "field")
        try rig.startGateway()
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        let first = sampleReadings(from: 0, count: 20, base: base)
        try publishField(rig, first)
        func data(_ lines: [JSONValue]) -> [(device: String, m: JSONValue)] {
            lines.filter { $0["type"]?.string == "DDATA" }.flatMap { l in l["metrics"]!.elements.map { (l["device"]!.string!, $0) } }
        }
        #expect(TestKit.waitUntil(timeout: 30) { data(host.lines).count >= first.count }, "DDATA metrics: \(data(host.lines).count)")
        var lines = node(host.lines)
        #expect(lines.allSatisfy { $0["error"] == nil }, "undecodable: \(lines.filter { $0["error"] != nil })")
        #expect(lines.first?["type"]?.string == "NBIRTH")
        #expect(lines.first?["seq"]?.number == 0)
        let bdSeq = lines.first?["metrics"]?.elements.first { $0["name"]?.string == "bdSeq" }?["value"]?.number
        #expect(bdSeq != nil)
        // A device's DBIRTH comes before its first DDATA.
        for device in ["boiler", "door"] {
            let birth = lines.firstIndex { $0["type"]?.string == "DBIRTH" && $0["device"]?.string == device }
            let firstData = lines.firstIndex { $0["type"]?.string == "DDATA" && $0["device"]?.string == device }
            #expect(birth != nil && firstData != nil && birth! < firstData!, "\(device): DBIRTH at \(String(describing: birth)), DDATA at \(String(describing: firstData))")
        }
        // seq 0, 1, 2 ... in arrival order, NBIRTH to the last DDATA.
        let seqs = lines.compactMap { $0["seq"]?.number }.map(Int.init)
        #expect(seqs == Array(0..<seqs.count), "seq: \(seqs)")
        // The values read, by name (resolved from aliases by the host), with their times and types.
        // One DDATA per device and batch: in order within each device.
        func byDevice(_ got: [(device: String, m: JSONValue)]) -> [String: [String]] {
            Dictionary(grouping: got.map { ($0.device, "\($0.m["name"]?.string ?? "?")@\(Int64($0.m["ts"]?.number ?? 0))=\($0.m["value"]!)") }, by: \.0).mapValues { $0.map(\.1) }
        }
        func byDevice(_ want: [FieldReading]) -> [String: [String]] {
            Dictionary(grouping: want.map { ($0.device, "\($0.metric)@\($0.ts)=\(jsonValue($0.value))") }, by: \.0).mapValues { $0.map(\.1) }
        }
        #expect(byDevice(data(lines)) == byDevice(first))
        #expect(data(lines).allSatisfy { $0.m["hist"]?.bool == false })
        let types = Dictionary(data(lines).map { ("\($0.device)/\($0.m["name"]!.string!)", Int($0.m["datatype"]!.number!)) }, uniquingKeysWith: { a, _ in a })
        #expect(types == ["boiler/temp": 10, "boiler/state": 12, "door/open": 11])

        // Rebirth on request: NBIRTH (seq 0, same bdSeq) and both DBIRTHs again.
        let before = lines.count
        try peer(rig, ["ncmd-rebirth", "--port", "\(rig.cloud.port)", "--group", "plant", "--node", "gw-e2e"])
        #expect(TestKit.waitUntil(timeout: 10) { node(Array(host.lines.dropFirst(before))).filter { $0["type"]?.string == "DBIRTH" }.count >= 2 })
        lines = node(host.lines)
        let reborn = Array(node(Array(host.lines.dropFirst(before))))
        #expect(reborn.first?["type"]?.string == "NBIRTH" && reborn.first?["seq"]?.number == 0)
        #expect(reborn.first?["metrics"]?.elements.first { $0["name"]?.string == "bdSeq" }?["value"]?.number == bdSeq)

        // DCMD: a write to boiler/setpoint, run once on the device through the command path.
        try peer(rig, ["dcmd", "--port", "\(rig.cloud.port)", "--group", "plant", "--node", "gw-e2e", "--device", "boiler", "--metric", "setpoint", "--value", "42"])
        // Out of range: refused by the actuator's checks, never sent.
        try peer(rig, ["dcmd", "--port", "\(rig.cloud.port)", "--group", "plant", "--node", "gw-e2e", "--device", "boiler", "--metric", "setpoint", "--value", "420"])
        #expect(TestKit.waitUntil(timeout: 10) { field.lines.contains { $0["topic"]?.string == "actuators/setpoint/set" } })
        usleep(1_000_000)
        #expect(field.lines.filter { $0["topic"]?.string == "actuators/setpoint/set" }.map { $0["payload"]?.string } == ["42"])

        // A cloud outage: readings wait in the outbox, then go historical after a new birth.
        rig.cloud.stop()
        let backlog = sampleReadings(from: 100, count: 10, base: base)
        try publishField(rig, backlog, name: "pub2")
        usleep(7_000_000)
        let beforeOutage = host.lines.count
        try rig.cloud.start()
        #expect(TestKit.waitUntil(timeout: 30) { data(Array(host.lines.dropFirst(beforeOutage))).count >= backlog.count })
        var after = node(Array(host.lines.dropFirst(beforeOutage)))
        // The broker may publish the old session's NDEATH when it stops; the new session starts with NBIRTH.
        #expect(after.prefix { $0["type"]?.string != "NBIRTH" }.allSatisfy { $0["type"]?.string == "NDEATH" && $0["bdSeq"]?.number == bdSeq },
                "before the new NBIRTH: \(after.prefix { $0["type"]?.string != "NBIRTH" })")
        after = Array(after.drop { $0["type"]?.string != "NBIRTH" })
        let newBdSeq = after.first?["metrics"]?.elements.first { $0["name"]?.string == "bdSeq" }?["value"]?.number
        // One more per CONNECT: several when the broker was tried while down.
        #expect(newBdSeq != nil && newBdSeq != bdSeq, "bdSeq \(String(describing: bdSeq)) → \(String(describing: newBdSeq))")
        #expect(byDevice(data(after)) == byDevice(backlog))
        #expect(data(after).allSatisfy { $0.m["hist"]?.bool == true }, "the backlog is historical")
        let afterSeqs = after.compactMap { $0["seq"]?.number }.map(Int.init)
        #expect(afterSeqs == Array(0..<afterSeqs.count), "seq after the reconnect: \(afterSeqs)")

        // The gateway dies: the broker publishes its NDEATH with the session's bdSeq.
        // (An NDEATH of the earlier session may already be among the lines: wait for a new one.)
        let beforeKill = host.lines.count
        rig.gateway?.kill9()
        #expect(TestKit.waitUntil(timeout: 10) { host.lines.dropFirst(beforeKill).contains { $0["type"]?.string == "NDEATH" } })
        #expect(host.lines.dropFirst(beforeKill).last { $0["type"]?.string == "NDEATH" }?["bdSeq"]?.number == newBdSeq)
    }

    /// ThingsBoard's gateway API as the server sees it: a connect before each device's first
    /// telemetry, every reading once with its time, and RPC through the command path: run once
    /// (a repeated request id is answered again, not run again), replies with success or why not.
    @Test func thingsboardGatewayTelemetryAndRPC() throws {
        let rig = try Rig(extraSources: { _ in Self.actuator }, uplinkExtra: """
            format = "thingsboard"
            rpc = true
            username = "tb-access-token"
            """)
        let server = try Recorder(rig: rig, port: rig.cloud.port, topic: "v1/gateway/#", name: "tb-server")
        let field = try Recorder(rig: rig, port: rig.field.port, topic: "actuators/#", name: "field")
        try rig.startGateway()
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        let readings = sampleReadings(from: 0, count: 30, base: base)
        try publishField(rig, readings)
        func telemetry(_ lines: [JSONValue]) -> [String] {
            lines.filter { $0["topic"]?.string == "v1/gateway/telemetry" }.flatMap { l -> [String] in
                guard let doc = try? JSONParser.parse(l["payload"]!.string!) else { return ["unparseable"] }
                return doc.members.flatMap { dev in dev.value.elements.flatMap { e in
                    e["values"]!.members.map { "\(dev.key)/\($0.key)@\(Int64(e["ts"]!.number!))=\($0.value)" } } }
            }
        }
        #expect(TestKit.waitUntil(timeout: 30) { telemetry(server.lines).count >= readings.count })
        let lines = server.lines
        #expect(Set(telemetry(lines)) == Set(readings.map { "\($0.device)/\($0.metric)@\($0.ts)=\(jsonValue($0.value))" }))
        #expect(telemetry(lines).count == readings.count, "each reading once")
        for device in ["boiler", "door"] {
            let connect = lines.firstIndex { $0["topic"]?.string == "v1/gateway/connect" && (try? JSONParser.parse($0["payload"]!.string!))?["device"]?.string == device }
            let firstTelemetry = lines.firstIndex { $0["topic"]?.string == "v1/gateway/telemetry" && $0["payload"]!.string!.contains("\"\(device)\"") }
            #expect(connect != nil && firstTelemetry != nil && connect! < firstTelemetry!, "\(device) connected before its telemetry")
        }
        let rpc = #"{"device":"boiler","data":{"id":7,"method":"valve","params":"close"}}"#
        try peer(rig, ["send", "--port", "\(rig.cloud.port)", "--topic", "v1/gateway/rpc", "--payload", rpc])
        func replies(_ id: Int) -> [JSONValue] {
            server.lines.compactMap { l -> JSONValue? in
                guard l["topic"]?.string == "v1/gateway/rpc", let d = try? JSONParser.parse(l["payload"]!.string!), d["id"]?.number == Double(id) else { return nil }
                return d
            }
        }
        #expect(TestKit.waitUntil(timeout: 10) { !replies(7).isEmpty })
        #expect(replies(7).first?["data"]?["success"]?.bool == true, "\(replies(7))")
        #expect(replies(7).first?["device"]?.string == "boiler")
        // The same request again (a retry by the server): answered again, not run again.
        try peer(rig, ["send", "--port", "\(rig.cloud.port)", "--topic", "v1/gateway/rpc", "--payload", rpc])
        #expect(TestKit.waitUntil(timeout: 10) { replies(7).count >= 2 })
        // Not declared, and a value outside the allowlist: refused with the reason, never run.
        try peer(rig, ["send", "--port", "\(rig.cloud.port)", "--topic", "v1/gateway/rpc", "--payload",
                       #"{"device":"boiler","data":{"id":8,"method":"selfDestruct","params":{"value":1}}}"#])
        try peer(rig, ["send", "--port", "\(rig.cloud.port)", "--topic", "v1/gateway/rpc", "--payload",
                       #"{"device":"boiler","data":{"id":9,"method":"valve","params":"explode"}}"#])
        #expect(TestKit.waitUntil(timeout: 10) { !replies(8).isEmpty && !replies(9).isEmpty })
        #expect(replies(8).first?["data"]?["success"]?.bool == false)
        #expect(replies(8).first?["data"]?["detail"]?.string?.contains("unknown_actuator") == true, "\(replies(8))")
        #expect(replies(9).first?["data"]?["success"]?.bool == false)
        // Garbage on the RPC topic: counted, no reply, nothing run, the gateway carries on.
        try peer(rig, ["send", "--port", "\(rig.cloud.port)", "--topic", "v1/gateway/rpc", "--payload", "{not json"])
        usleep(1_000_000)
        #expect(field.lines.filter { $0["topic"]?.string == "actuators/valve/set" }.map { $0["payload"]?.string } == ["close"])
        #expect(rig.gateway?.isRunning == true)
        let cloud = try statusJSON(rig)["uplinks"]?.elements.first { $0["name"]?.string == "cloud" }
        #expect(cloud?["format"]?.string == "thingsboard")
        #expect(cloud?["inbound_rejected"]?["bad_rpc"]?.number == 1, "the garbage is counted: \(cloud?["inbound_rejected"] ?? .null)")
    }

    /// Per-reading topics for Node-RED / Home Assistant: each reading on its own topic as JSON,
    /// Home Assistant discovery configs before the first state, and retained last values a late
    /// subscriber gets.
    @Test func perReadingTopicsWithHomeAssistantDiscovery() throws {
        let rig = try Rig(uplinkExtra: """
            format = "per_reading"
            topic = "site/{device}/{metric}"
            value = "json"
            retain = true
            homeassistant_discovery = true
            """)
        let sub = try Recorder(rig: rig, port: rig.cloud.port, topic: "#", name: "nodered")
        try rig.startGateway()
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        let readings = sampleReadings(from: 0, count: 10, base: base)
        try publishField(rig, readings)
        func states(_ lines: [JSONValue]) -> [String] {
            lines.filter { $0["topic"]!.string!.hasPrefix("site/") }.map { l in
                let d = try? JSONParser.parse(l["payload"]!.string!)
                return "\(l["topic"]!.string!.dropFirst(5))@\(Int64(d?["t"]?.number ?? 0))=\(d?["v"] ?? .null)"
            }
        }
        #expect(TestKit.waitUntil(timeout: 30) { states(sub.lines).count >= readings.count })
        let lines = sub.lines
        #expect(states(lines) == readings.map { "\($0.device)/\($0.metric)@\($0.ts)=\(jsonValue($0.value))" })
        for (device, metric, component) in [("boiler", "temp", "sensor"), ("boiler", "state", "sensor"), ("door", "open", "binary_sensor")] {
            let topic = "homeassistant/\(component)/brume_gw-e2e/\(device)_\(metric)/config"
            let cfg = lines.firstIndex { $0["topic"]?.string == topic }
            let state = lines.firstIndex { $0["topic"]?.string == "site/\(device)/\(metric)" }
            #expect(cfg != nil && state != nil && cfg! < state!, "\(topic) before the first state")
            if let cfg, let doc = try? JSONParser.parse(lines[cfg]["payload"]!.string!) {
                #expect(doc["state_topic"]?.string == "site/\(device)/\(metric)")
                #expect(doc["value_template"]?.string == "{{ value_json.v }}")
                #expect(doc["availability_topic"]?.string == "brume/gw-e2e/status")
                #expect(doc["unique_id"]?.string == "brume_gw-e2e_\(device)_\(metric)")
            }
        }
        // A late subscriber (Home Assistant restarting) gets the retained configs and last values.
        let late = try Recorder(rig: rig, port: rig.cloud.port, topic: "#", name: "late")
        #expect(TestKit.waitUntil(timeout: 10) { late.lines.filter { $0["retain"]?.bool == true && $0["topic"]!.string!.hasPrefix("site/") }.count == 3 })
        let retained = Dictionary(late.lines.filter { $0["topic"]!.string!.hasPrefix("site/") }.map { ($0["topic"]!.string!, $0["payload"]!.string!) },
                                  uniquingKeysWith: { _, b in b })
        let lastTemp = readings.last { $0.metric == "temp" }!
        #expect((try? JSONParser.parse(retained["site/boiler/temp"] ?? ""))?["v"] == jsonValue(lastTemp.value))
        #expect(late.lines.filter { $0["topic"]!.string!.hasPrefix("homeassistant/") && $0["retain"]?.bool == true }.count == 3)
    }

    /// SenML packs (RFC 8428) on MQTT: names and times resolved from the base name and time
    /// give back every reading exactly, with the batch id as an MQTT 5 user property.
    @Test func senmlPacksResolveToTheReadings() throws {
        let rig = try Rig(uplinkExtra: "format = \"senml\"")
        let sub = try Recorder(rig: rig, port: rig.cloud.port, topic: "brume/+/senml", name: "senml", v5: true)
        try rig.startGateway()
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        let readings = sampleReadings(from: 0, count: 20, base: base)
        try publishField(rig, readings)
        func resolved(_ lines: [JSONValue]) -> [String] {
            lines.flatMap { l -> [String] in
                guard let pack = try? JSONParser.parse(l["payload"]!.string!) else { return ["unparseable"] }
                var bn = "", bt = 0.0
                return pack.elements.map { r in
                    if let b = r["bn"]?.string { bn = b }
                    if let t = r["bt"]?.number { bt = t }
                    let t = bt + (r["t"]?.number ?? 0)
                    let v = r["v"] ?? r["vb"] ?? r["vs"] ?? .null
                    return "\(bn)\(r["n"]?.string ?? "")@\(Int64((t * 1000).rounded()))=\(v)"
                }
            }
        }
        #expect(TestKit.waitUntil(timeout: 30) { resolved(sub.lines).count >= readings.count })
        #expect(resolved(sub.lines) == readings.map { "gw-e2e:\($0.device)/\($0.metric)@\($0.ts)=\(jsonValue($0.value))" })
        #expect(sub.lines.allSatisfy { ($0["user"]?["batch"]?.string ?? "").hasPrefix("gw-e2e") }, "batch id as a user property")
    }

    /// SenML over HTTP: one gzipped POST per batch, `application/senml+json`, the batch id in
    /// `X-Brume-Batch`, every reading back from the packs.
    @Test func senmlOverHTTP() throws {
        let port = TestKit.freePort()
        let rig = try Rig(extraSources: { _ in """
            [uplink.senml]
            kind = "http"
            url = "http://127.0.0.1:\(port)/senml"
            format = "senml"
            batch_max_delay = "200ms"
            """ })
        let out = "\(rig.dir)/http.jsonl"
        let server = try Child("/usr/bin/env", ["python3", fixturesDirectory() + "/interop_peer.py", "http-record", "--port", "\(port)",
                                                "--out", out, "--ready", "\(rig.dir)/http.ready"], dir: rig.dir, name: "http-senml")
        defer { server.terminate() }
        #expect(TestKit.waitUntil(timeout: 10) { TestKit.canConnect(port: port) })
        try rig.startGateway()
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        let readings = sampleReadings(from: 0, count: 20, base: base)
        try publishField(rig, readings)
        func posts() -> [JSONValue] {
            ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }
        }
        func resolved() -> [String] {
            posts().flatMap { l -> [String] in
                guard let pack = try? JSONParser.parse(l["payload"]!.string!) else { return ["unparseable"] }
                var bn = "", bt = 0.0
                return pack.elements.map { r in
                    if let b = r["bn"]?.string { bn = b }
                    if let t = r["bt"]?.number { bt = t }
                    return "\(bn)\(r["n"]?.string ?? "")@\(Int64(((bt + (r["t"]?.number ?? 0)) * 1000).rounded()))=\(r["v"] ?? r["vb"] ?? r["vs"] ?? .null)"
                }
            }
        }
        #expect(TestKit.waitUntil(timeout: 30) { resolved().count >= readings.count })
        #expect(resolved() == readings.map { "gw-e2e:\($0.device)/\($0.metric)@\($0.ts)=\(jsonValue($0.value))" })
        #expect(posts().allSatisfy { $0["content_type"]?.string == "application/senml+json" && ($0["batch"]?.string ?? "").hasPrefix("gw-e2e") })
    }

    /// Several backend consumers share one gateway's telemetry with an MQTT 5 shared
    /// subscription: every batch reaches exactly one of them, every reading arrives once.
    @Test func sharedSubscriptionConsumersGetEachBatchOnce() throws {
        let rig = try Rig(uplinkExtra: "batch_max_readings = 50")
        let consumers = try (1...3).map { try Recorder(rig: rig, port: rig.cloud.port, topic: "$share/backend/brume/+/telemetry", name: "consumer-\($0)", v5: true) }
        try rig.startGateway()
        let n = 3000
        let lg = try rig.loadgen(count: n, rate: 1000)
        func readings() -> [(consumer: Int, batch: String, seqs: [Int])] {
            consumers.enumerated().flatMap { (i, c) in c.lines.compactMap { l -> (Int, String, [Int])? in
                guard let b = try? JSONParser.parse(l["payload"]!.string!), let id = b["batch"]?.string else { return nil }
                return (i, id, b["readings"]!.elements.filter { $0["m"]?.string == "seq" }.compactMap { $0["v"]?.number.map(Int.init) })
            } }
        }
        #expect(lg.wait(timeout: 60) == 0)
        #expect(TestKit.waitUntil(timeout: 60) { Set(readings().flatMap(\.seqs)).count >= n })
        let all = readings()
        let ids = all.map(\.batch)
        #expect(Set(ids).count == ids.count, "a batch reached one consumer only")
        let seqs = all.flatMap(\.seqs)
        #expect(Set(seqs) == Set(1...n) && seqs.count == n, "every reading once: \(seqs.count) for \(Set(seqs).count) distinct")
        #expect(Set(all.map(\.consumer)).count == 3, "the broker spread the batches over all three")
    }
}
