import BrumeCore
import BrumeRules
import Logging

/// `brume fn test MODULE --input readings.jsonl`: runs a function on sample inputs as the gateway
/// would (same sandbox, fuel and memory cap), printing what would go on as JSON lines.
///
/// Input lines (what `brume tail --json` prints and what dead-letter files hold):
/// `{"device":"pump-1","metric":"flow","time":1764000000000,"value":36}`; for a decoder,
/// `{"device":"tank-7","payload_base64":"..."}` (or `payload_hex`, or `payload` as text).
/// `time` defaults to the moment of the run.
public struct FunctionTestRun {
    public struct Summary: Sendable {
        public var inputs = 0
        public var calls = 0
        public var outputs = 0
        public var failures: [String: Int] = [:]
        public var badLines = 0
        public var fuelMax: UInt64 = 0
    }

    public let function: WasmFunction
    /// Window functions: readings per window of a stream (nil: a stream's readings are one window).
    public var windowSize: Int?
    public let now: Int64

    public init(spec: FunctionSpec, windowSize: Int? = nil, now: Int64, logger: Logger) throws(FunctionLoadError) {
        function = try WasmFunction(spec, logger: logger, deadLetterDirectory: nil, logFailures: false)
        self.windowSize = windowSize
        self.now = now
    }

    /// The kind a module is written for, from its exports (nil: none or several).
    public static func kind(of bytes: [UInt8]) -> FunctionSpec.Kind? {
        var found: [FunctionSpec.Kind] = []
        for k in FunctionSpec.Kind.allCases {
            let needle = Array(k.entry.utf8)
            if bytes.count >= needle.count, (0...(bytes.count - needle.count)).contains(where: { i in bytes[i..<(i + needle.count)].elementsEqual(needle) }) {
                found.append(k)
            }
        }
        return found.count == 1 ? found[0] : nil
    }

    enum Input {
        case reading(Reading)
        case payload(device: String, metric: String, time: Int64, bytes: [UInt8])
    }

    struct LineError: Error {
        var message: String
        init(_ m: String) { message = m }
    }

    func parse(_ line: Substring) -> Result<Input, LineError> {
        let doc: JSONValue
        do { doc = try JSONParser.parse(String(line)) } catch { return .failure(LineError("not JSON: \(error)")) }
        guard case .string(let device)? = doc["device"], !device.isEmpty else { return .failure(LineError("no \"device\"")) }
        var metric = ""
        if case .string(let m)? = doc["metric"] { metric = m }
        var time = now
        if let t = doc["time"], t != .null {
            guard let parsed = parseTimestamp(t) else { return .failure(LineError("\"time\" is not a timestamp")) }
            time = parsed
        }
        if function.spec.kind == .decoder {
            if case .string(let b)? = doc["payload_base64"] {
                guard let bytes = Base64.decode(b) else { return .failure(LineError("\"payload_base64\" is not base64")) }
                return .success(.payload(device: device, metric: metric, time: time, bytes: bytes))
            }
            if case .string(let h)? = doc["payload_hex"] {
                let digits = Array(h.utf8).filter { $0 != UInt8(ascii: " ") }
                guard digits.count % 2 == 0 else { return .failure(LineError("\"payload_hex\" has an odd number of digits")) }
                var bytes: [UInt8] = []
                for i in stride(from: 0, to: digits.count, by: 2) {
                    guard let b = UInt8(String(decoding: digits[i...(i + 1)], as: UTF8.self), radix: 16) else { return .failure(LineError("\"payload_hex\" is not hex")) }
                    bytes.append(b)
                }
                return .success(.payload(device: device, metric: metric, time: time, bytes: bytes))
            }
            if case .string(let text)? = doc["payload"] { return .success(.payload(device: device, metric: metric, time: time, bytes: Array(text.utf8))) }
            return .failure(LineError("a decoder's input needs \"payload_base64\", \"payload_hex\" or \"payload\""))
        }
        guard !metric.isEmpty else { return .failure(LineError("no \"metric\"")) }
        let value: Value
        switch doc["value"] {
        case .number(let d)?: value = .number(d)
        case .bool(let b)?: value = .bool(b)
        case .string(let s)?: value = .string(s)
        default: return .failure(LineError("\"value\" must be a number, a bool or a string"))
        }
        return .success(.reading(Reading(device: device, metric: metric, time: time, value: value)))
    }

    /// Runs every line of `text`; `emit` gets each output line (JSON), `problem` each failure.
    public func run(_ text: String, emit: (String) -> Void, problem: (String) -> Void) -> Summary {
        var summary = Summary()
        var window: [(Reading, Int)] = []   // the open window and the line numbers
        func line(_ r: Reading) -> String {
            var out: [UInt8] = Array("{\"device\":".utf8)
            WireFormat.appendString(r.device, to: &out)
            out.append(contentsOf: ",\"metric\":".utf8)
            WireFormat.appendString(r.metric, to: &out)
            out.append(contentsOf: ",\"time\":\(r.time),\"value\":".utf8)
            WireFormat.appendValue(r.value, to: &out)
            out.append(UInt8(ascii: "}"))
            return String(decoding: out, as: UTF8.self)
        }
        func outcome(_ o: FunctionOutcome, input: Reading?, at n: Int) {
            summary.calls += 1
            switch o {
            case .keep(let more):
                if let input { emit(line(input)) }
                for r in more { emit(line(r)) }
                summary.outputs += more.count + (input == nil ? 0 : 1)
            case .replace(let rs):
                for r in rs { emit(line(r)) }
                summary.outputs += rs.count
            case .failed(let message, let passOn):
                let reason = String(function.statistics().lastError?.prefix { $0 != ":" } ?? "failed")
                summary.failures[reason, default: 0] += 1
                problem("line \(n): \(message)\(passOn ? " (on_error = pass: the input goes on)" : "")")
                if passOn, let input { emit(line(input)); summary.outputs += 1 }
            }
        }
        func flushWindow() {
            guard let first = window.first else { return }
            let samples = window.compactMap { (r, _) -> WindowSample? in
                if case .number(let v) = r.value { return WindowSample(time: r.time, value: v) }
                return nil
            }
            let end = window.map(\.0.time).max() ?? first.0.time
            outcome(function.window(device: first.0.device, metric: first.0.metric, end: end, samples: samples), input: nil, at: first.1)
            window.removeAll()
        }
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let n = i + 1
            if raw.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) { continue }
            switch parse(raw) {
            case .failure(let why):
                summary.badLines += 1
                problem("line \(n): \(why.message)")
            case .success(.reading(let r)):
                summary.inputs += 1
                switch function.spec.kind {
                case .reading: outcome(function.apply(r), input: r, at: n)
                case .window:
                    guard case .number = r.value else { problem("line \(n): a window holds numbers"); summary.badLines += 1; continue }
                    if let w = window.first, w.0.device != r.device || w.0.metric != r.metric { flushWindow() }
                    window.append((r, n))
                    if let size = windowSize, window.count >= size { flushWindow() }
                case .decoder: break
                }
            case .success(.payload(let device, let metric, let time, let bytes)):
                summary.inputs += 1
                var out: [Reading] = []
                let failure: PayloadError? = bytes.withUnsafeBytes { p in
                    do throws(PayloadError) {
                        try function.decode(p, device: device, metric: metric, receivedAt: time, into: &out)
                        return nil
                    } catch { return error }
                }
                if let error = failure {
                    summary.calls += 1
                    let reason = function.statistics().lastError.map { String($0.prefix { $0 != ":" }) } ?? error.reason.rawValue
                    summary.failures[error.reason == .noMetrics ? error.reason.rawValue : reason, default: 0] += 1
                    problem("line \(n): \(error.message)")
                } else {
                    outcome(.replace(out), input: nil, at: n)
                }
            }
        }
        flushWindow()
        summary.fuelMax = function.statistics().fuelMax
        return summary
    }
}
