import BrumeConfig
import BrumeCore
import BrumeLoRaWAN
import Logging

/// `[[source]] kind = "lorawan"`: the server of a Semtech UDP packet forwarder (BrumeLoRaWAN);
/// each declared device in status with its frame counter and radio signal.
enum LoRaWANSourceKind {
    static func devices(_ c: LoRaWANSourceConfig) -> [LoRaWANDevice] {
        c.devices.compactMap { d in
            // The loader checked the hex: these cannot fail.
            guard let a = LoRaWANFrame.devAddr(hex: d.devAddr), let n = LoRaWANFrame.key(hex: d.nwkSKey), let k = LoRaWANFrame.key(hex: d.appSKey) else { return nil }
            return LoRaWANDevice(devAddr: a, device: d.device, nwkSKey: n, appSKey: k, codec: LoRaWANDevice.Codec(rawValue: d.codec) ?? .cayenne,
                                 allowCounterReset: d.allowCounterReset)
        }
    }

    static func make(_ s: SourceConfig, _ c: LoRaWANSourceConfig, dataDir: String, sink: any ReadingSink, logger: Logger) -> RunningSource {
        let options = LoRaWANSource.Options(host: c.host, port: UInt16(c.port), gateways: Set(c.gateways.compactMap { UInt64($0, radix: 16) }),
                                            devices: devices(c), signal: c.signal, countersPath: "\(dataDir)/lorawan-\(s.name).fcnt",
                                            downlinks: c.downlinks)
        let src = LoRaWANSource(name: s.name, options: options, sink: sink, logger: logger)
        return RunningSource(config: s, source: src, kind: "lorawan", details: {
            let states = src.devices.withLock { $0 }
            let now = wallClockMillis()
            return c.devices.map { d in
                let st = states[d.device]
                var members = [JSONMember(key: "dev_addr", value: .string(d.devAddr))]
                var gauges: [DeviceDetails.Sample] = []
                if let f = st?.fcnt { members.append(JSONMember(key: "fcnt", value: .number(Double(f)))) }
                if let r = st?.rssi {
                    members.append(JSONMember(key: "rssi", value: .number(r)))
                    gauges.append(.init(name: "brume_lorawan_rssi_dbm", labels: [], value: r))
                }
                if let x = st?.snr {
                    members.append(JSONMember(key: "snr", value: .number(x)))
                    gauges.append(.init(name: "brume_lorawan_snr_db", labels: [], value: x))
                }
                if let seen = st?.lastSeenMillis { members.append(JSONMember(key: "last_seen_ms", value: .number(Double(seen)))) }
                if let why = st?.lastRefusal { members.append(JSONMember(key: "last_refusal", value: .string(why))) }
                let summary: String
                if let seen = st?.lastSeenMillis {
                    summary = "\(d.devAddr) fcnt \(st?.fcnt ?? 0), \((now - seen) / 1000) s ago\(st?.rssi.map { ", \($0) dBm" } ?? "")\(st?.snr.map { ", SNR \($0) dB" } ?? "")"
                } else {
                    summary = "\(d.devAddr) not heard yet\(st?.lastRefusal.map { " (last frame refused: \($0))" } ?? "")"
                }
                return DeviceDetails(name: d.device, state: st?.lastSeenMillis == nil ? nil : "online", status: .object(members), gauges: gauges, summary: summary)
            }
        }, driver: { act in
            guard case .lorawan(_, let device, let fport, let values) = act.via else { return nil }
            let timeout = Duration.milliseconds(act.timeoutMillis)
            return { value in
                let key: String = switch value {
                case .string(let s): s
                case .bool(let b): b ? "true" : "false"
                case .number(let d): d == d.rounded() && abs(d) < 1e15 ? "\(Int64(d))" : "\(d)"
                }
                guard let hex = values[key], let payload = bytes(hex: hex) else {
                    return .failure(DriverFailure(detail: "no payload for \(key) in lorawan.values"))
                }
                switch await src.sendDownlink(device: device, fport: UInt8(fport), payload: payload, timeout: timeout) {
                case .success(let r): return .success(r)
                case .failure(let f): return .failure(DriverFailure(detail: f.description))
                }
            }
        })
    }

    static func bytes(hex: String) -> [UInt8]? {
        let u = Array(hex.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var i = 0
        while i < u.count {
            guard let v = UInt8(String(decoding: u[i..<(i + 2)], as: UTF8.self), radix: 16) else { return nil }
            out.append(v)
            i += 2
        }
        return out
    }
}
