// Line framing of a serial byte stream, and the vocabulary of dropped frames.
//
// A serial port delivers bytes in chunks of any size: a line may be split anywhere, several
// lines may arrive in one read, and line noise (a loose connector, a device booting at another
// baud rate) produces arbitrary bytes. `LineFramer` turns that stream into frames without ever
// buffering more than `maxFrameLength` (+1) bytes; decoders (`FrameDecoder`) judge the content.

/// Why a frame (a line) was dropped. `rawValue` is a stable label for metrics.
public enum FrameDropReason: String, Sendable, CaseIterable {
    /// Longer than the framer's `maxFrameLength`; dropped up to the next terminator.
    case tooLong = "too_long"
    /// NMEA checksum missing (when required), malformed or not matching.
    case badChecksum = "bad_checksum"
    /// Not in the configured format (bad pair, wrong field count, bad value, invalid JSON, ...).
    case unparsable
    /// A partial line cut off by a disconnect (`LineFramer.reset()`).
    case truncated
    /// Well-formed but of a kind this gateway does not decode (e.g. NMEA GST, GBS, TXT, PUBX).
    case unsupported
    /// Nothing but whitespace (or nothing to read in it).
    case empty
}

/// A frame that could not be decoded. `message` says what was wrong and quotes at most
/// 60 bytes of the frame, escaped, so it is safe to put in a log line.
public struct FrameError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: FrameDropReason
    public var message: String

    public init(_ reason: FrameDropReason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { "\(reason.rawValue): \(message)" }
}

/// Splits a byte stream into lines.
///
/// - Terminators: `.lf` (LF; a CR right before it is removed, so CRLF works too), `.cr` (CR; an
///   LF right after it is swallowed, so CRLF works too) or `.any` (LF, CR or CRLF; CRLF is one
///   terminator, never an extra empty frame — also when CR and LF arrive in different chunks).
/// - Empty lines are skipped silently. All other bytes (NUL, 0xFF, ...) are passed through.
/// - A line longer than `maxFrameLength` bytes (terminator excluded) is reported once as
///   `.tooLong` and discarded up to the next terminator; the framer never holds more than
///   `maxFrameLength + 1` bytes.
/// - Frames handed to `onFrame` are only valid during the callback.
public struct LineFramer: Sendable {
    public enum Terminator: Sendable, Hashable, CaseIterable {
        case lf, cr, any
    }

    public let terminator: Terminator
    public let maxFrameLength: Int

    private var buffer: [UInt8] = []
    /// Inside an over-long line (already reported): skip to the next terminator.
    private var discarding = false
    /// The last byte seen was a CR that ended a line (`.cr`, `.any`): swallow a following LF.
    private var afterCR = false

    public init(terminator: Terminator = .any, maxFrameLength: Int = 512) {
        self.terminator = terminator
        self.maxFrameLength = max(1, maxFrameLength)
    }

    /// Bytes of an incomplete line currently held (at most `maxFrameLength + 1`).
    public var bufferedByteCount: Int { buffer.count }

    /// Feeds one chunk of the stream; calls `onFrame` for every complete, non-empty line and
    /// `onDrop` for every line dropped as `.tooLong`.
    public mutating func push(_ chunk: UnsafeRawBufferPointer,
                              onFrame: (UnsafeRawBufferPointer) -> Void,
                              onDrop: (FrameDropReason) -> Void) {
        guard let base = chunk.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let n = chunk.count
        let lf = UInt8(ascii: "\n")
        let cr = UInt8(ascii: "\r")
        var i = 0
        while i < n {
            if afterCR {
                afterCR = false
                if base[i] == lf { i += 1; continue }
            }
            // Find the next terminator.
            var j = i
            switch terminator {
            case .lf:
                while j < n && base[j] != lf { j += 1 }
            case .cr:
                while j < n && base[j] != cr { j += 1 }
            case .any:
                while j < n, case let c = base[j], c != lf && c != cr { j += 1 }
            }
            if j == n {
                appendPartial(base + i, n - i, onDrop: onDrop)
                return
            }
            if discarding {
                discarding = false          // the over-long line ends here; already reported
            } else if buffer.isEmpty {
                emit(UnsafeRawBufferPointer(start: base + i, count: j - i), onFrame: onFrame, onDrop: onDrop)
            } else {
                appendPartial(base + i, j - i, onDrop: onDrop)
                if !discarding {
                    buffer.withUnsafeBytes { emit($0, onFrame: onFrame, onDrop: onDrop) }
                }
                discarding = false
                buffer.removeAll(keepingCapacity: true)
            }
            if base[j] == cr && terminator != .lf { afterCR = true }
            i = j + 1
        }
    }

    /// Feeds one chunk of the stream. See `push(_:onFrame:onDrop:)`.
    public mutating func push(_ chunk: [UInt8],
                              onFrame: (UnsafeRawBufferPointer) -> Void,
                              onDrop: (FrameDropReason) -> Void) {
        chunk.withUnsafeBytes { push($0, onFrame: onFrame, onDrop: onDrop) }
    }

    /// Forgets the partial line (after a disconnect or a reopen of the port).
    ///
    /// - Returns: `.truncated` when a non-empty partial line was dropped (count it), else nil.
    ///   The rest of an over-long line, already reported as `.tooLong`, is not reported again.
    @discardableResult
    public mutating func reset() -> FrameDropReason? {
        let dropped = !buffer.isEmpty && !discarding
        buffer.removeAll(keepingCapacity: true)
        discarding = false
        afterCR = false
        return dropped ? .truncated : nil
    }

    /// Forgets the partial line (after a disconnect or a reopen of the port) and reports it to
    /// `onDrop` as `.truncated` if it was not empty. See `reset()`.
    public mutating func reset(onDrop: (FrameDropReason) -> Void) {
        if let reason = reset() { onDrop(reason) }
    }

    // MARK: internals

    /// Limit of the buffer: in `.lf` mode the line may still end with the CR of a CRLF.
    private var bufferLimit: Int { terminator == .lf ? maxFrameLength + 1 : maxFrameLength }

    private mutating func appendPartial(_ p: UnsafePointer<UInt8>, _ count: Int, onDrop: (FrameDropReason) -> Void) {
        guard !discarding, count > 0 else { return }
        if buffer.count + count > bufferLimit {
            buffer.removeAll(keepingCapacity: true)
            discarding = true
            onDrop(.tooLong)
            return
        }
        if buffer.capacity < bufferLimit { buffer.reserveCapacity(bufferLimit) }
        buffer.append(contentsOf: UnsafeBufferPointer(start: p, count: count))
    }

    private func emit(_ line: UnsafeRawBufferPointer, onFrame: (UnsafeRawBufferPointer) -> Void,
                      onDrop: (FrameDropReason) -> Void) {
        var count = line.count
        if terminator == .lf && count > 0 && line[count - 1] == UInt8(ascii: "\r") { count -= 1 }
        if count == 0 { return }
        if count > maxFrameLength { onDrop(.tooLong); return }
        onFrame(UnsafeRawBufferPointer(rebasing: line[0..<count]))
    }
}

// MARK: - Quoting frames in messages

extension FrameBytes {
    /// At most this many frame bytes are quoted in error messages.
    static let quotedLimit = 60

    /// `"…"` with at most 60 bytes of `bytes`: `"` and `\` escaped, CR/LF/TAB as `\r` `\n` `\t`,
    /// other non-printable or non-ASCII bytes as `\xNN`, and `...` after the quote when truncated.
    static func quote(_ bytes: UnsafeRawBufferPointer) -> String {
        var out: [UInt8] = [UInt8(ascii: "\"")]
        out.reserveCapacity(min(bytes.count, quotedLimit) + 8)
        let hex: StaticString = "0123456789ABCDEF"
        for c in bytes.prefix(quotedLimit) {
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out.append(UInt8(ascii: "\\")); out.append(c)
            case 0x20..<0x7F:
                out.append(c)
            case 0x0A:
                out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case 0x0D:
                out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case 0x09:
                out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            default:
                out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "x"))
                out.append(hex.utf8Start[Int(c >> 4)]); out.append(hex.utf8Start[Int(c & 15)])
            }
        }
        out.append(UInt8(ascii: "\""))
        if bytes.count > quotedLimit { out.append(contentsOf: "...".utf8) }
        return String(decoding: out, as: UTF8.self)
    }
}
