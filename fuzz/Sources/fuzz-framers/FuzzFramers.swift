// LineFramer + FrameDecoder for kv, csv (header learnt from the stream, and configured columns)
// and jsonl. Input: byte 0 picks format, terminator and frame limit; bytes 1-4 are a pattern of
// chunk sizes; the rest is the serial stream.
// Invariants: the frames and drops do not depend on how the stream is chunked; frames are
// non-empty, at most maxFrameLength bytes, without the terminator; the framer buffers at most
// maxFrameLength + 1 bytes; a decode error appends nothing; readings are finite, strings short.
import BrumeCore
import BrumeSerial
import FuzzSupport

let receivedAt: Int64 = 1_764_169_999_000
let sentinel = Reading(device: "sentinel", metric: "sentinel", time: -1, value: .bool(true))

let formats: [SerialFormat] = [
    .kv(pairSeparator: UInt8(ascii: ","), assign: UInt8(ascii: "="), timeKey: nil),
    .kv(pairSeparator: UInt8(ascii: " "), assign: UInt8(ascii: ":"), timeKey: "t"),
    .csv(columns: nil, delimiter: UInt8(ascii: ","), timeColumn: "time", deviceColumn: "dev"),
    .csv(columns: nil, delimiter: UInt8(ascii: ";"), timeColumn: nil, deviceColumn: nil),
    .csv(columns: ["t", "temp", "hum"], delimiter: UInt8(ascii: ","), timeColumn: "t", deviceColumn: nil),
    .csv(columns: ["a", "", "dev"], delimiter: 0x09, timeColumn: nil, deviceColumn: "dev"),
    .jsonl(.jsonObject(time: try! JSONPointer("/ts"))),
    .jsonl(.jsonValue(value: try! JSONPointer("/data/v"), time: try! JSONPointer("/t"))),
    .jsonl(.number),
]

enum Event: Equatable {
    case frame([UInt8])
    case drop(FrameDropReason)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var cursor = ByteCursor(UnsafeRawBufferPointer(start: data, count: size))
    let b0 = Int(cursor.next())
    let format = formats[b0 % formats.count]
    let terminator = LineFramer.Terminator.allCases[(b0 / formats.count) % 3]
    let maxFrame = b0 >= 128 ? 24 : 512
    let pattern = (0..<4).map { _ in Int(cursor.next() % 32) + 1 }
    let stream = cursor.rest

    // Whole stream in one push.
    var whole = LineFramer(terminator: terminator, maxFrameLength: maxFrame)
    var expected: [Event] = []
    whole.push(stream, onFrame: { expected.append(.frame(Array($0))) }, onDrop: { expected.append(.drop($0)) })
    let wholeTail = whole.reset()

    // Chunked, decoding as it goes.
    var framer = LineFramer(terminator: terminator, maxFrameLength: maxFrame)
    var decoder = FrameDecoder(format: format, device: "dev")
    var events: [Event] = []
    var out = [sentinel]
    var offset = 0
    var k = 0
    while offset < stream.count {
        let n = min(pattern[k % pattern.count], stream.count - offset)
        k += 1
        framer.push(UnsafeRawBufferPointer(rebasing: stream[offset..<(offset + n)]), onFrame: { frame in
            events.append(.frame(Array(frame)))
            invariant(frame.count > 0 && frame.count <= maxFrame, "frame of \(frame.count) bytes (limit \(maxFrame))")
            switch terminator {
            case .lf: invariant(!frame.contains(0x0A), "LF inside a frame")
            case .cr: invariant(!frame.contains(0x0D), "CR inside a frame")
            case .any: invariant(!frame.contains(0x0A) && !frame.contains(0x0D), "terminator inside a frame")
            }
            let before = out
            do throws(FrameError) {
                try decoder.decode(frame, receivedAt: receivedAt, into: &out)
            } catch {
                invariant(out == before, "\(error.reason) error appended readings for \(show(frame))")
                return
            }
            invariant(Array(out[..<before.count]) == before, "decode modified earlier readings")
            let new = out[before.count...]
            invariant(allFinite(new), "non-finite reading from \(show(frame)): \(new)")
            for r in new {
                if case .string(let s) = r.value {
                    let limit = { if case .jsonl = format { PayloadDecoder.maxStringBytes } else { FrameDecoder.maxStringBytes } }()
                    invariant(s.utf8.count <= limit, "string value of \(s.utf8.count) bytes from \(show(frame))")
                    if case .jsonl = format {} else { invariant(!s.utf8.contains { $0 < 0x20 || $0 == 0x7F }, "control byte in string value from \(show(frame))") }
                }
                if case .jsonl = format {} else {
                    invariant(!r.metric.isEmpty && r.metric.utf8.count <= FrameDecoder.maxNameBytes, "bad metric name \(r.metric) from \(show(frame))")
                    invariant(!r.device.isEmpty && r.device.utf8.count <= FrameDecoder.maxNameBytes, "bad device name \(r.device) from \(show(frame))")
                }
            }
            if out.count > 4096 { out.removeSubrange(1...) }
        }, onDrop: { events.append(.drop($0)) })
        invariant(framer.bufferedByteCount <= maxFrame + 1, "framer holds \(framer.bufferedByteCount) bytes (limit \(maxFrame))")
        offset += n
    }
    let tail = framer.reset()
    invariant(events == expected, "chunking (pattern \(pattern)) changed the frames: \(events.count) events vs \(expected.count) in one push")
    invariant(tail == wholeTail, "chunking changed the reset result: \(String(describing: tail)) vs \(String(describing: wholeTail))")
    return 0
}

@_cdecl("fuzz_framers_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
