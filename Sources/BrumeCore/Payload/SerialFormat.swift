/// How lines read from a serial device become readings (see BrumeSerial's
/// FrameDecoder). Pure vocabulary, shared by the configuration and the decoder.
public enum SerialFormat: Sendable, Hashable {
    /// "temp=21.5,hum=40": pairs separated by `pairSeparator`, key and value by `assign`.
    case kv(pairSeparator: UInt8, assign: UInt8, timeKey: String?)
    /// CSV: columns named in config, or taken from a header line.
    case csv(columns: [String]?, delimiter: UInt8, timeColumn: String?, deviceColumn: String?)
    /// One JSON document per line, decoded like an MQTT payload.
    case jsonl(PayloadFormat)
    /// NMEA 0183 (GPS/GNSS receivers).
    case nmea(requireChecksum: Bool)
}
