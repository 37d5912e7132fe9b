import BrumeTestKit
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import BrumeCore
import BrumeSerial


/// What a framer reported, in order.
enum FramerEvent: Hashable, CustomStringConvertible {
    case frame([UInt8])
    case drop(FrameDropReason)

    var description: String {
        switch self {
        case .frame(let b): return "frame(\(String(decoding: b, as: UTF8.self).debugDescription))"
        case .drop(let r): return "drop(\(r.rawValue))"
        }
    }
}

extension LineFramer {
    /// Pushes `input` cut at `cuts` (sorted offsets) and returns the events.
    mutating func events(_ input: [UInt8], cuts: [Int]) -> [FramerEvent] {
        var events: [FramerEvent] = []
        var start = 0
        for cut in cuts + [input.count] where cut >= start {
            input[start..<cut].withUnsafeBytes { chunk in
                push(chunk, onFrame: { events.append(.frame(Array($0))) }, onDrop: { events.append(.drop($0)) })
            }
            start = cut
        }
        return events
    }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Decodes one frame given as a String; returns the readings or the error.
func decodeOne(_ decoder: inout FrameDecoder, _ line: String, receivedAt: Int64 = 1_000) -> Result<[Reading], FrameError> {
    var out: [Reading] = []
    do throws(FrameError) {
        try decoder.decode(bytes(line), receivedAt: receivedAt, into: &out)
        return .success(out)
    } catch {
        return .failure(error)
    }
}

extension Result where Failure == FrameError {
    var readings: Success? { if case .success(let r) = self { return r }; return nil }
    var reason: FrameDropReason? { if case .failure(let e) = self { return e.reason }; return nil }
}

/// `"$" + body + "*" + checksum`.
func nmeaSentence(_ body: String, start: Character = "$") -> String {
    var sum: UInt8 = 0
    for b in body.utf8 { sum ^= b }
    let hex = Array("0123456789ABCDEF")
    return "\(start)\(body)*\(hex[Int(sum >> 4)])\(hex[Int(sum & 15)])"
}

/// The NMEA XOR checksum of a sentence is present and matches (independent of the decoder).
func hasValidChecksum(_ line: [UInt8]) -> Bool {
    guard let dollar = line.firstIndex(where: { $0 == UInt8(ascii: "$") || $0 == UInt8(ascii: "!") }),
          let star = line.lastIndex(of: UInt8(ascii: "*")), star + 3 <= line.count else { return false }
    var sum: UInt8 = 0
    for b in line[(dollar + 1)..<star] { sum ^= b }
    guard let given = UInt8(String(decoding: line[(star + 1)..<(star + 3)], as: UTF8.self), radix: 16) else { return false }
    return given == sum
}

func readFileBytes(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}

func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

/// The real receiver logs: `Tests/Fixtures/nmea` in the repository (copies of
/// `../shared/data/nmea`, GPSD project, BSD terms, headers kept), so a clone
/// tests on its own.
func nmeaDataDirectory(filePath: String = #filePath) -> String {
    var parts = filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(2)                      // file, BrumeSerialTests → Tests
    return parts.joined(separator: "/") + "/Fixtures/nmea"
}

/// Milliseconds since the epoch of an RFC 3339 literal (test convenience).
func epochMillis(_ rfc3339: String) -> Int64 {
    guard let t = parseRFC3339(rfc3339) else { fatalError("bad test timestamp \(rfc3339)") }
    return t
}
