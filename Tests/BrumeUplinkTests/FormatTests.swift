import BrumeCore
import BrumeMQTT
import BrumeStore
import BrumeTestKit
import SwiftProtobuf
import Testing
@testable import BrumeUplink

private func batch(historical: Bool = false) -> BatchRecord {
    BatchRecord(first: 1, last: 10, historical: historical, uplink: "u", run: 1)
}

private func payload(_ m: MQTTOutMessage) throws -> Sparkplug_Payload {
    try Sparkplug_Payload(serializedBytes: m.payload)
}

@Suite struct SparkplugLayoutTests {
    /// Births before data, aliases declared once, seq without gaps across births and data,
    /// a new DBIRTH when a device gains a metric or a metric changes type.
    @Test func birthsAliasesAndSequence() throws {
        var l = SparkplugLayout(group: "plant", node: "gw", commands: true)
        let next = l.nextWill()
        let will = try #require(next)
        #expect(will.topic == "spBv1.0/plant/NDEATH/gw" && will.qos == 1 && !will.retain)
        #expect(try Sparkplug_Payload(serializedBytes: will.payload).metrics.first?.longValue == 0)
        var wire: [MQTTOutMessage] = l.sessionStarted(now: 1000)
        let rs = [Reading(device: "boiler", metric: "temp", time: 10, value: .number(71.5)),
                  Reading(device: "door", metric: "open", time: 11, value: .bool(true)),
                  Reading(device: "boiler", metric: "temp", time: 12, value: .number(72))]
        wire += l.prepare(l.encode(batch(), readings: rs, now: 1000), now: 1000)
        #expect(wire.map(\.topic) == ["spBv1.0/plant/NBIRTH/gw", "spBv1.0/plant/DBIRTH/gw/boiler", "spBv1.0/plant/DDATA/gw/boiler",
                                      "spBv1.0/plant/DBIRTH/gw/door", "spBv1.0/plant/DDATA/gw/door"])
        let nbirth = try payload(wire[0])
        #expect(nbirth.seq == 0 && nbirth.metrics.map(\.name) == ["bdSeq", "Node Control/Rebirth"])
        let birth = try payload(wire[1])
        #expect(birth.metrics.map(\.name) == ["temp"] && birth.metrics[0].datatype == 10 && birth.metrics[0].hasAlias)
        let data = try payload(wire[2])
        #expect(data.metrics.map(\.doubleValue) == [71.5, 72] && data.metrics.allSatisfy { !$0.hasName && $0.alias == birth.metrics[0].alias })
        #expect(data.metrics.map(\.timestamp) == [10, 12] && data.metrics.allSatisfy { !$0.isHistorical })
        // Another batch: no births; then a new metric: the device is born again with both.
        let more = l.prepare(l.encode(batch(historical: true), readings: [rs[0]], now: 1000), now: 1000)
        #expect(more.map(\.topic) == ["spBv1.0/plant/DDATA/gw/boiler"])
        #expect(try payload(more[0]).metrics.allSatisfy(\.isHistorical))
        let grown = l.prepare(l.encode(batch(), readings: [Reading(device: "boiler", metric: "state", time: 13, value: .string("on"))], now: 1000), now: 1000)
        #expect(grown.map(\.topic) == ["spBv1.0/plant/DBIRTH/gw/boiler", "spBv1.0/plant/DDATA/gw/boiler"])
        #expect(try payload(grown[0]).metrics.map(\.name) == ["temp", "state"])
        let seqs = try (wire + more + grown).map { try payload($0).seq }
        #expect(seqs == Array(0..<UInt64(seqs.count)))
        // Rebirth: NBIRTH at seq 0, then every device.
        let reborn = l.rebirth(now: 2000)
        #expect(reborn.map(\.topic) == ["spBv1.0/plant/NBIRTH/gw", "spBv1.0/plant/DBIRTH/gw/boiler", "spBv1.0/plant/DBIRTH/gw/door"])
        #expect(try reborn.map { try payload($0).seq } == [0, 1, 2])
    }

    @Test func seqWrapsAfter255() throws {
        var l = SparkplugLayout(group: "g", node: "n", commands: false)
        _ = l.nextWill()
        _ = l.sessionStarted(now: 0)
        var seqs: [UInt64] = []
        for i in 0..<300 {
            let out = l.prepare(l.encode(batch(), readings: [Reading(device: "d", metric: "m", time: Int64(i), value: .number(Double(i)))], now: 0), now: 0)
            seqs += try out.map { try payload($0).seq }
        }
        #expect(seqs.count == 301 && seqs.enumerated().allSatisfy { $0.element == UInt64(($0.offset + 1) % 256) })
    }

    @Test func commandsAndHostileInput() throws {
        var l = SparkplugLayout(group: "g", node: "n", commands: true)
        _ = l.sessionStarted(now: 0)
        _ = l.prepare(l.encode(batch(), readings: [Reading(device: "pump", metric: "speed", time: 1, value: .number(1))], now: 0), now: 0)
        var cmd = Sparkplug_Payload()
        cmd.timestamp = 77
        var m = Sparkplug_Payload.Metric()
        m.alias = 1 // by alias, as hosts do after a birth
        m.datatype = 10
        m.doubleValue = 42
        cmd.metrics = [m]
        let bytes = try cmd.serializedBytes() as [UInt8]
        let r = bytes.withUnsafeBytes { l.received(topic: "spBv1.0/g/DCMD/n/pump", payload: $0, now: 0) }
        guard case .commands(let cmds, _) = r else { Issue.record("\(r)"); return }
        #expect(cmds == [Command(id: "spb:pump:speed:77", actuator: "pump/speed", value: .number(42), expires: nil, origin: "sparkplug")])
        let garbage: [UInt8] = [0xFF, 0xFF, 0xFF, 0x01, 0x02]
        let g = garbage.withUnsafeBytes { l.received(topic: "spBv1.0/g/DCMD/n/pump", payload: $0, now: 0) }
        guard case .invalid(let reason, _, _) = g else { Issue.record("\(g)"); return }
        #expect(reason == "bad_sparkplug_payload")
        let other = bytes.withUnsafeBytes { l.received(topic: "spBv1.0/other/DCMD/n/pump", payload: $0, now: 0) }
        guard case .none = other else { Issue.record("another group's command was taken: \(other)"); return }
    }
}

@Suite struct MessageFramesTests {
    @Test func roundTrip() {
        let msgs = [MQTTOutMessage(topic: "a/b", payload: [1, 2, 3], retain: true, key: "d\tm"),
                    MQTTOutMessage(topic: "c", payload: Array(repeating: 7, count: 70_000), key: "")]
        var body: [UInt8] = []
        for m in msgs { MessageFrames.append(m, to: &body) }
        #expect(MessageFrames.decode(body) == msgs)
        #expect(MessageFrames.decode(Array(body.prefix(9))) == [], "a truncated frame is dropped, not misread")
    }
}

@Suite struct ThingsBoardLayoutTests {
    @Test func telemetryMergesReadingsOfOneTime() {
        var l = ThingsBoardLayout(rpc: true)
        _ = l.sessionStarted(now: 0)
        let rs = [Reading(device: "b", metric: "t", time: 5, value: .number(1)), Reading(device: "b", metric: "s", time: 5, value: .string("x")),
                  Reading(device: "b", metric: "t", time: 5, value: .number(2)), Reading(device: "d", metric: "o", time: 6, value: .bool(true))]
        let out = l.prepare(l.encode(batch(), readings: rs, now: 0), now: 0)
        #expect(out.map { String(decoding: $0.payload, as: UTF8.self) } == [
            #"{"device":"b"}"#, #"{"device":"d"}"#,
            #"{"b":[{"ts":5,"values":{"t":1,"s":"x"}},{"ts":5,"values":{"t":2}}],"d":[{"ts":6,"values":{"o":true}}]}"#])
        #expect(l.prepare(l.encode(batch(), readings: [rs[0]], now: 0), now: 0).count == 1, "connected once per session")
    }

    @Test func rpcRequestsRepliesAndOwnEchoes() {
        var l = ThingsBoardLayout(rpc: true)
        func recv(_ s: String) -> LayoutInbound { Array(s.utf8).withUnsafeBytes { l.received(topic: "v1/gateway/rpc", payload: $0, now: 0) } }
        guard case .commands(let c, _) = recv(#"{"device":"b","data":{"id":3,"method":"valve","params":{"value":"open"}}}"#) else { Issue.record("no command"); return }
        #expect(c == [Command(id: "tb:b:3", actuator: "b/valve", value: .string("open"), expires: nil, origin: "thingsboard")])
        let reply = l.reply(to: CommandResult(id: "tb:b:3", state: .done, at: 0, detail: "ok"))
        #expect(reply.map { String(decoding: $0.payload, as: UTF8.self) } == #"{"device":"b","id":3,"data":{"success":true,"state":"done","detail":"ok"}}"#)
        #expect(l.reply(to: CommandResult(id: "tb:b:3", state: .sent, at: 0, detail: "")) == nil, "only final states are answered")
        guard case .none = recv(String(decoding: reply!.payload, as: UTF8.self)) else { Issue.record("our own reply taken as a request"); return }
        guard case .invalid = recv("[1,2") else { Issue.record("garbage accepted"); return }
        guard case .invalid(_, _, let replies) = recv(#"{"device":"b","data":{"id":4,"method":"valve","params":[1]}}"#) else { Issue.record("array params accepted"); return }
        #expect(replies.count == 1, "a refusal the server can be told")
    }
}

@Suite struct SenMLTests {
    @Test func packWithBaseNameAndTime() {
        var out: [UInt8] = []
        SenML.encode(gateway: "gw-1", readings: [
            Reading(device: "b", metric: "t", time: 1_764_170_000_123, value: .number(71.5)),
            Reading(device: "b", metric: "s", time: 1_764_170_000_623, value: .string("on")),
            Reading(device: "d", metric: "o", time: 1_764_170_000_023, value: .bool(true)),
            Reading(device: "d", metric: "o", time: 1_764_170_000_123, value: .bool(false)),
        ], into: &out)
        #expect(String(decoding: out, as: UTF8.self) == #"[{"bn":"gw-1:","bt":1764170000.123,"n":"b/t","v":71.5},{"n":"b/s","t":0.5,"vs":"on"},{"n":"d/o","t":-0.1,"vb":true},{"n":"d/o","vb":false}]"#)
        var empty: [UInt8] = []
        SenML.encode(gateway: "g", readings: [], into: &empty)
        #expect(empty == Array("[]".utf8))
    }

    @Test func secondsAreExact() {
        func s(_ ms: Int64) -> String { var o: [UInt8] = []; SenML.appendSeconds(millis: ms, to: &o); return String(decoding: o, as: UTF8.self) }
        #expect([s(0), s(1), s(10), s(999), s(1000), s(-1500), s(1_764_170_000_001), s(Int64.min)] ==
                ["0", "0.001", "0.01", "0.999", "1", "-1.5", "1764170000.001", "-9223372036854775.808"])
    }
}

@Suite struct PerReadingLayoutTests {
    @Test func topicsValuesAndDiscovery() {
        var l = PerReadingLayout(format: .init(topic: "site/{device}/{metric}", json: false, retain: true, discoveryPrefix: "homeassistant"),
                                 gateway: "gw 1", statusTopic: "brume/gw/status")
        _ = l.sessionStarted(now: 0)
        let out = l.prepare(l.encode(batch(), readings: [Reading(device: "a+b", metric: "t", time: 1, value: .number(2.5)),
                                                          Reading(device: "a+b", metric: "t", time: 2, value: .number(3))], now: 0), now: 0)
        #expect(out.map(\.topic) == ["homeassistant/sensor/brume_gw_1/a_b_t/config", "site/a_b/t", "site/a_b/t"])
        #expect(out.map(\.retain) == [true, true, true])
        #expect(String(decoding: out[2].payload, as: UTF8.self) == "3")
        #expect(out.map(\.tracked) == [false, true, true])
    }
}

/// Hostile input on the command topics (the broker lets anyone with publish rights send
/// anything): mutated valid requests never crash a layout, and whatever is taken as a command
/// names an actuator of the device the topic or request names.
@Suite struct InboundMutationTests {
    static func mutate(_ seed: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var b = seed
        for _ in 0..<(1 + Int(rng.next() % 4)) {
            switch rng.next() % 5 {
            case 0 where !b.isEmpty: b[Int(rng.next() % UInt64(b.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            case 1 where !b.isEmpty: b.removeLast(Int(rng.next() % UInt64(b.count)))
            case 2: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: Int(rng.next() % UInt64(b.count + 1)))
            case 3 where b.count > 1: b.swapAt(Int(rng.next() % UInt64(b.count)), Int(rng.next() % UInt64(b.count)))
            default: b += b.prefix(Int(rng.next() % 16))
            }
        }
        return b
    }

    @Test func sparkplugCommands() throws {
        var l = SparkplugLayout(group: "g", node: "n", commands: true)
        _ = l.prepare(l.encode(BatchRecord(first: 1, last: 1, historical: false), readings: [Reading(device: "pump", metric: "speed", time: 1, value: .number(1))], now: 0), now: 0)
        var cmd = Sparkplug_Payload()
        cmd.timestamp = 5
        var m = Sparkplug_Payload.Metric()
        m.name = "speed"
        m.datatype = 4
        m.longValue = UInt64(bitPattern: -3)
        cmd.metrics = [m, m]
        let seed: [UInt8] = try cmd.serializedBytes()
        var rng = SplitMix64(seed: 21)
        var taken = 0
        for i in 0..<20_000 {
            let input = i == 0 ? seed : Self.mutate(seed, &rng)
            let topic = i % 7 == 0 ? "spBv1.0/g/NCMD/n" : "spBv1.0/g/DCMD/n/pump"
            switch input.withUnsafeBytes({ l.received(topic: topic, payload: $0, now: 0) }) {
            case .commands(let cs, _):
                taken += cs.count
                #expect(cs.allSatisfy { $0.actuator.hasPrefix("pump/") && $0.id.hasPrefix("spb:pump:") })
            default: break
            }
        }
        #expect(taken > 0, "the unmutated request is a command")
    }

    @Test func thingsboardRPC() {
        var l = ThingsBoardLayout(rpc: true)
        let seed = Array(#"{"device":"boiler","data":{"id":7,"method":"valve","params":{"value":12.5}}}"#.utf8)
        var rng = SplitMix64(seed: 7)
        var taken = 0
        for i in 0..<20_000 {
            let input = i == 0 ? seed : Self.mutate(seed, &rng)
            switch input.withUnsafeBytes({ l.received(topic: "v1/gateway/rpc", payload: $0, now: 0) }) {
            case .commands(let cs, _):
                taken += cs.count
                #expect(cs.allSatisfy { c in c.id.hasPrefix("tb:") && c.actuator.contains("/") })
            default: break
            }
        }
        #expect(taken > 0)
    }
}
