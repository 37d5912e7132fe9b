// FrameDecoder(.nmea) with and without required checksums, over the lines of the input (the
// decoder is stateful: dates, seen sentences). Invariants: an error appends nothing; readings are
// finite, latitude/longitude in range; while both decoders have accepted the same lines (so
// their date/seen-sentence state is the same), a sentence accepted with checksums required is
// accepted with identical readings when they are optional.
import BrumeCore
import BrumeSerial
import FuzzSupport

let sentinel = Reading(device: "sentinel", metric: "sentinel", time: -1, value: .bool(true))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var lax = FrameDecoder(format: .nmea(requireChecksum: false), device: "gps")
    var strict = FrameDecoder(format: .nmea(requireChecksum: true), device: "gps")
    var framer = LineFramer(terminator: .any, maxFrameLength: 512)
    var receivedAt: Int64 = 1_764_169_999_000
    var inSync = true
    framer.push(UnsafeRawBufferPointer(start: data, count: size), onFrame: { frame in
        receivedAt += 250
        var laxOut = [sentinel], strictOut = [sentinel]
        var laxOK = true, strictOK = true
        do throws(FrameError) { try lax.decode(frame, receivedAt: receivedAt, into: &laxOut) } catch {
            laxOK = false
            invariant(laxOut == [sentinel], "lax \(error.reason) error appended readings for \(show(frame))")
        }
        do throws(FrameError) { try strict.decode(frame, receivedAt: receivedAt, into: &strictOut) } catch {
            strictOK = false
            invariant(strictOut == [sentinel], "strict \(error.reason) error appended readings for \(show(frame))")
        }
        for (ok, out) in [(laxOK, laxOut), (strictOK, strictOut)] where ok {
            invariant(out.first == sentinel, "decode modified earlier readings")
            let new = out.dropFirst()
            invariant(allFinite(new), "non-finite reading from \(show(frame)): \(new)")
            for r in new {
                invariant(r.device == "gps", "device \(r.device)")
                if case .number(let d) = r.value {
                    if r.metric == "latitude" { invariant(abs(d) <= 90, "latitude \(d) from \(show(frame))") }
                    if r.metric == "longitude" { invariant(abs(d) <= 180, "longitude \(d) from \(show(frame))") }
                }
            }
        }
        if strictOK && inSync {
            invariant(laxOK, "accepted with checksum required, rejected without: \(show(frame))")
            invariant(laxOut == strictOut, "strict and lax readings differ for \(show(frame)): \(strictOut) vs \(laxOut)")
        }
        if laxOK != strictOK { inSync = false }   // lax learnt from a line strict rejected
    }, onDrop: { _ in })
    return 0
}

@_cdecl("fuzz_nmea_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
