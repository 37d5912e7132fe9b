/// Cayenne Low Power Payload (channel, type, value... repeated), the common payload of LoRa
/// sensors and of the Arduino/RAK examples. Each value becomes a metric named after its type
/// and channel (`temperature_1`; multi-axis types add the axis: `accelerometer_2_x`,
/// `gps_3_latitude`). Sizes, scales and signs are those of the IPSO object table, as
/// pycayennelpp (the test's independent encoder) has them.
public enum CayenneLPP {
    struct Kind {
        var name: String
        /// Bytes per component.
        var sizes: [Int]
        var scale: Double
        var signed: Bool
        var components: [String]
    }

    static let kinds: [UInt8: Kind] = [
        0: Kind(name: "digital_input", sizes: [1], scale: 1, signed: false, components: []),
        1: Kind(name: "digital_output", sizes: [1], scale: 1, signed: false, components: []),
        2: Kind(name: "analog_input", sizes: [2], scale: 100, signed: true, components: []),
        3: Kind(name: "analog_output", sizes: [2], scale: 100, signed: true, components: []),
        100: Kind(name: "generic", sizes: [4], scale: 1, signed: false, components: []),
        101: Kind(name: "illuminance", sizes: [2], scale: 1, signed: false, components: []),
        102: Kind(name: "presence", sizes: [1], scale: 1, signed: false, components: []),
        103: Kind(name: "temperature", sizes: [2], scale: 10, signed: true, components: []),
        104: Kind(name: "humidity", sizes: [1], scale: 2, signed: false, components: []),
        113: Kind(name: "accelerometer", sizes: [2, 2, 2], scale: 1000, signed: true, components: ["x", "y", "z"]),
        115: Kind(name: "barometer", sizes: [2], scale: 10, signed: false, components: []),
        116: Kind(name: "voltage", sizes: [2], scale: 100, signed: false, components: []),
        117: Kind(name: "current", sizes: [2], scale: 1000, signed: false, components: []),
        118: Kind(name: "frequency", sizes: [4], scale: 1, signed: false, components: []),
        120: Kind(name: "percentage", sizes: [1], scale: 1, signed: false, components: []),
        121: Kind(name: "altitude", sizes: [2], scale: 1, signed: true, components: []),
        122: Kind(name: "load", sizes: [3], scale: 1000, signed: true, components: []),
        125: Kind(name: "concentration", sizes: [2], scale: 1, signed: false, components: []),
        128: Kind(name: "power", sizes: [2], scale: 1, signed: false, components: []),
        130: Kind(name: "distance", sizes: [4], scale: 1000, signed: false, components: []),
        131: Kind(name: "energy", sizes: [4], scale: 1000, signed: false, components: []),
        132: Kind(name: "direction", sizes: [2], scale: 1, signed: false, components: []),
        133: Kind(name: "unix_time", sizes: [4], scale: 1, signed: false, components: []),
        134: Kind(name: "gyrometer", sizes: [2, 2, 2], scale: 100, signed: true, components: ["x", "y", "z"]),
        135: Kind(name: "colour", sizes: [1, 1, 1], scale: 1, signed: false, components: ["r", "g", "b"]),
        136: Kind(name: "gps", sizes: [3, 3, 3], scale: 1, signed: true, components: ["latitude", "longitude", "altitude"]),
        142: Kind(name: "switch", sizes: [1], scale: 1, signed: false, components: []),
    ]

    public enum DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
        case unknownType(UInt8, at: Int)
        case truncated(at: Int)

        public var description: String {
            switch self {
            case .unknownType(let t, let at): "unknown Cayenne LPP type \(t) at byte \(at)"
            case .truncated(let at): "Cayenne LPP payload ends inside the value at byte \(at)"
            }
        }
    }

    /// Every (metric, value) of a payload, in order; an error for the whole payload when one
    /// field cannot be read (what follows an unknown type cannot be found).
    public static func decode(_ bytes: [UInt8]) -> Result<[(metric: String, value: Double)], DecodeError> {
        var out: [(metric: String, value: Double)] = []
        var i = 0
        while i < bytes.count {
            guard i + 2 <= bytes.count else { return .failure(.truncated(at: i)) }
            let channel = bytes[i], type = bytes[i + 1]
            guard let k = kinds[type] else { return .failure(.unknownType(type, at: i + 1)) }
            var p = i + 2
            guard p + k.sizes.reduce(0, +) <= bytes.count else { return .failure(.truncated(at: i)) }
            for (n, size) in k.sizes.enumerated() {
                var raw: UInt32 = 0
                for b in bytes[p..<(p + size)] { raw = raw << 8 | UInt32(b) }
                p += size
                var v: Double
                if k.signed, raw >= UInt32(1) << (size * 8 - 1) {
                    v = Double(Int64(raw) - (Int64(1) << (size * 8)))
                } else {
                    v = Double(raw)
                }
                let scale = type == 136 ? (n < 2 ? 10_000 : 100) : k.scale
                v /= scale
                let metric = k.components.isEmpty ? "\(k.name)_\(channel)" : "\(k.name)_\(channel)_\(k.components[n])"
                out.append((metric, v))
            }
            i = p
        }
        return .success(out)
    }
}
