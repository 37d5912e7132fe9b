// TelemetryBatch.decode (the northbound wire format) and SegmentCodec.decode (outbox blobs).
// Input: byte 0 picks the decoder: 0 mod 4 telemetry JSON, 1 mod 4 a raw segment blob,
// 2 mod 4 a segment body to which magic, version 1 and a valid CRC are added (so the fuzzer gets
// past the CRC check), 3 mod 4 the same with version 2 (readings stamped by an unsynchronised
// clock: a boot id and a list of marked readings).
// Invariants: a decoded batch has finite numbers, and encode -> decode gives the same batch
// (and the encoding is a fixed point); decoded segment readings re-encode and decode back
// bit-exactly.
import BrumeCore
import BrumeStore
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let body = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    switch data[0] % 4 {
    case 0:
        guard let batch = try? TelemetryBatch.decode(body) else { return 0 }
        invariant(allFinite(batch.readings), "non-finite reading in \(batch)")
        invariant(batch.version == WireFormat.version, "version \(batch.version)")
        let encoded = batch.encoded()
        let again: TelemetryBatch
        do { again = try TelemetryBatch.decode(encoded) } catch {
            invariant(false, "encoded batch does not decode: \(error): \(show(encoded))")
            return 0
        }
        invariant(again == batch, "round trip changed the batch: \(show(encoded))")
        invariant(again.encoded() == encoded, "encoding is not a fixed point")
    case 1:
        guard let s = try? SegmentCodec.decodeSegment(body) else { return 0 }
        checkSegment(s.readings, boot: s.boot)
    default:
        var blob: [UInt8] = [SegmentCodec.magic, data[0] % 4 == 2 ? SegmentCodec.version : SegmentCodec.versionWithClock]
        blob.append(contentsOf: body)
        let crc = SegmentCodec.crc32(blob)
        for shift in stride(from: 0, to: 32, by: 8) { blob.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        guard let s = try? blob.withUnsafeBytes({ try SegmentCodec.decodeSegment($0) }) else { return 0 }
        checkSegment(s.readings, boot: s.boot)
    }
    return 0
}

func checkSegment(_ readings: [Reading], boot: String?) {
    let marked = readings.contains { $0.unsyncedBootMillis != nil }
    invariant(marked == (boot != nil), "marks without a boot id, or a boot id without marks")
    let blob = SegmentCodec.encode(readings, boot: boot ?? "")
    let again: [Reading]
    do { again = try SegmentCodec.decode(blob) } catch {
        invariant(false, "re-encoded segment does not decode: \(error): \(show(blob))")
        return
    }
    invariant(sameBits(again, readings), "segment round trip changed readings: \(readings) -> \(again)")
    invariant(SegmentCodec.encode(again) == blob, "segment encoding is not a fixed point")
}

@_cdecl("fuzz_wire_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data!, size) }
}
