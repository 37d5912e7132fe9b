import AsyncHTTPClient
import BrumeConfig
import BrumeCore
import BrumeStore
import CompressNIO
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// What the runtime needs of every uplink (MQTT, HTTP).
public protocol Uplink: AnyObject, Sendable {
    var config: UplinkConfig { get }
    var state: UplinkState { get }
    var stats: UplinkStats { get }
    func run() async
    func shutdown() async
}

/// The sync loop for an HTTP(S) uplink: outbox → batches → POST (v1 JSON or InfluxDB line
/// protocol, gzip) → 2xx → outbox ack.
///
/// One batch at a time, in order (each POST carries hundreds of readings). A batch is
/// recorded before it is sent, so a resend after a failure or a restart is the same batch
/// (`X-Brume-Batch` header and `batch` in the JSON: consumers dedup on it). Network errors,
/// 5xx, 408 and 429 are retried with jittered backoff (429/503 honour `Retry-After`); 401
/// refreshes an OAuth2 token once; any other 4xx is final for that batch: it goes to the
/// dead-letter table (counted, exportable with `brume buffer dead-letters`) instead of
/// blocking the queue forever.
public final class HTTPUplink: Uplink, Sendable {
    public let config: UplinkConfig
    public let stats = UplinkStats()
    public let gatewayID: String
    private let http: HTTPSinkConfig
    private let outbox: Outbox
    private let key: String
    private let logger: Logger
    private let client: HTTPClient
    private let stateGauge = Gauge<UplinkState>(.connecting)
    private let stopping = Atomic<Bool>(false)
    private let limiter = LogRateLimiter(burst: 5, interval: .seconds(30))
    private let match: [Glob]
    private let bearer: String?
    private let oauth: OAuth2TokenSource?
    private let bandwidth: ByteRateLimiter?

    public init(config: UplinkConfig, gatewayID: String, outbox: Outbox, secret: (String) throws -> String?, logger: Logger) throws {
        guard let http = config.http else { throw UplinkError("uplink \(config.name) is not an HTTP uplink") }
        self.config = config
        self.http = http
        self.gatewayID = gatewayID
        self.outbox = outbox
        self.key = outbox.uplinkKey(config.name)
        var lg = logger
        lg[metadataKey: "uplink.name"] = "\(config.name)"
        self.logger = lg
        match = config.match.compactMap { try? Glob.parse($0).get() }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let t = http.tls {
            if let ca = t.caFile { tls.trustRoots = .file(ca) }
            if let cert = t.certFile, let key = t.keyFile {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            tls.certificateVerification = t.verifyHostname ? .fullVerification : .noHostnameVerification
        }
        var cfg = HTTPClient.Configuration(tlsConfiguration: tls, timeout: .init(connect: .seconds(5), read: .milliseconds(http.timeoutMillis)))
        cfg.decompression = .disabled
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: cfg)
        switch http.auth {
        case .none:
            bearer = nil
            oauth = nil
        case .bearer(let file):
            bearer = try secret(file)
            oauth = nil
        case .oauth2(let url, let id, let file, let scope):
            bearer = nil
            oauth = OAuth2TokenSource(tokenURL: url, clientID: id, clientSecret: try secret(file) ?? "", scope: scope, client: client, logger: lg)
        }
        bandwidth = config.maxBytesPerSecond.map { ByteRateLimiter(bytesPerSecond: $0) }
    }

    public var state: UplinkState { stateGauge.current }

    public func shutdown() async {
        stopping.store(true, ordering: .releasing)
        // Let the batch in flight finish (bounded by the request timeout), then close.
        for _ in 0..<40 where stateGauge.current != .stopped { try? await Task.sleep(for: .milliseconds(50)) }
        try? await client.shutdown()
    }

    public func run() async {
        logger.info("HTTP uplink starting", metadata: ["uplink.url": "\(http.displayURL)", "uplink.format": "\(http.format.rawValue)", "uplink.gzip": "\(http.gzip)"])
        var resend = outbox.unackedBatches(uplink: key)
        if !resend.isEmpty { logger.info("resending unacknowledged batches", metadata: ["batches": "\(resend.count)"]) }
        while !stopping.load(ordering: .acquiring) && !Task.isCancelled {
            let rec: BatchRecord
            var isResend = false
            if !resend.isEmpty {
                rec = resend.removeFirst()
                isResend = true
            } else {
                switch outbox.nextBatch(uplink: key, maxReadings: config.batchMaxReadings, maxDelayMillis: config.batchMaxDelayMillis) {
                case .batch(let r): rec = r
                case .waitUntil, .empty:
                    try? await Task.sleep(for: .milliseconds(50))
                    continue
                }
            }
            guard var readings = outbox.readings(of: rec) else { outbox.ack(rec); continue }
            if !match.isEmpty {
                readings = readings.filter { r in match.contains { $0.matches("\(r.device)/\(r.metric)") } }
                if readings.isEmpty { outbox.ack(rec); continue }
            }
            let batchID = WireFormat.batchID(gateway: gatewayID, first: rec.first, last: rec.last)
            var body: [UInt8] = []
            switch http.format {
            case .json: WireFormat.encodeTelemetry(gateway: gatewayID, batchID: batchID, historical: rec.historical, readings: readings, into: &body)
            case .influx: InfluxLineProtocol.encode(readings, gateway: gatewayID, measurement: http.influxMeasurement == "device" ? .device : .metric, into: &body)
            }
            let plain = body.count
            if http.gzip {
                var plainBuffer = ByteBuffer(bytes: body)
                if let z = try? plainBuffer.compress(with: .gzip()) { body = Array(z.readableBytesView) }
            }
            if isResend { stats.resends.add() }
            await deliver(rec, readings: readings.count, body: body, plainBytes: plain, batchID: batchID)
        }
        stateGauge.set(.stopped)
    }

    /// Sends one batch until it is acknowledged, dead-lettered, or the uplink stops.
    private func deliver(_ rec: BatchRecord, readings: Int, body: [UInt8], plainBytes: Int, batchID: String) async {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(30))
        var refreshed = false
        while !stopping.load(ordering: .acquiring) && !Task.isCancelled {
            if let bandwidth { await bandwidth.wait(bytes: body.count) }
            var req = HTTPClientRequest(url: http.url)
            req.method = .POST
            req.headers.add(name: "Content-Type", value: http.format == .json ? "application/json" : "text/plain; charset=utf-8")
            if http.gzip { req.headers.add(name: "Content-Encoding", value: "gzip") }
            req.headers.add(name: "X-Brume-Batch", value: batchID)
            req.headers.add(name: "User-Agent", value: "brume")
            do {
                if let bearer { req.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
                if let oauth { req.headers.add(name: "Authorization", value: "Bearer \(try await oauth.token())") }
            } catch {
                failed("oauth2_token", "cannot get an OAuth2 token", "\(error)")
                try? await Task.sleep(for: backoff.next())
                continue
            }
            req.body = .bytes(ByteBuffer(bytes: body))
            let t0 = monotonicNanos()
            stats.batchesSent.add()
            stats.bytesSent.add(Int64(body.count))
            stats.bytesUncompressed.add(Int64(plainBytes))
            do {
                let resp = try await client.execute(req, timeout: .milliseconds(http.timeoutMillis))
                let code = Int(resp.status.code)
                let text = (try? await resp.body.collect(upTo: 4096)).map { String(buffer: $0) } ?? ""
                switch code {
                case 200..<300:
                    outbox.ack(rec)
                    let nanos = monotonicNanos() - t0
                    stats.batchesAcked.add()
                    stats.readingsAcked.add(Int64(readings))
                    stats.lastAckLatencyMicros.set(Int64(nanos / 1000))
                    stats.lastAckMillis.set(wallClockMillis())
                    if let observe = stats.latencyObserver.withLock({ $0 }) { observe(.nanoseconds(Int64(nanos))) }
                    if stateGauge.current != .online {
                        stats.lastConnectMillis.set(wallClockMillis())
                        logger.info("HTTP uplink delivering", metadata: ["uplink.url": "\(http.displayURL)"])
                    }
                    stateGauge.set(.online)
                    return
                case 401 where oauth != nil && !refreshed:
                    refreshed = true
                    await oauth?.invalidate()
                    continue
                case 408, 429, 500..<600, 401:
                    failed("http_\(code)", "HTTP uplink: the endpoint refused the batch for now; retrying", "HTTP \(code): \(text.prefix(200))")
                    if code >= 500 || code == 408 { stateGauge.set(.offline) }
                    let wait = retryAfter(resp.headers) ?? backoff.next()
                    try? await Task.sleep(for: min(wait, .seconds(300)))
                default:
                    // Final for this batch: keep it aside, go on with the next.
                    stats.deadLettered.add(Int64(readings))
                    logger.error("HTTP uplink: the endpoint rejected a batch; it is kept as a dead letter (brume buffer dead-letters)",
                                 metadata: ["batch": "\(batchID)", "http.status": "\(code)", "readings": "\(readings)", "response": "\(text.prefix(300))"])
                    outbox.deadLetter(rec, status: code, response: text, body: body)
                    return
                }
            } catch {
                stateGauge.set(.offline)
                failed("network", "HTTP uplink: cannot reach the endpoint; retrying", "\(error)")
                try? await Task.sleep(for: backoff.next())
            }
        }
    }

    private func failed(_ reason: String, _ message: Logger.Message, _ detail: String) {
        stats.publishErrors.add(reason)
        if let n = limiter.admit() {
            logger.warning(message, metadata: ["uplink.url": "\(http.displayURL)", "reason": "\(reason)", "error": "\(detail)", "suppressed": "\(n)"])
        }
    }

    /// `Retry-After: 7` or an HTTP date.
    private func retryAfter(_ headers: HTTPHeaders) -> Duration? {
        guard let v = headers.first(name: "Retry-After")?.trimmingCharacters(in: " ") else { return nil }
        if let s = Int(v) { return .seconds(max(0, s)) }
        return nil
    }
}

public struct UplinkError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// OAuth2 client credentials: a cached access token, fetched again shortly before it
/// expires or when the endpoint says 401. The secret and the token are never logged.
actor OAuth2TokenSource {
    let tokenURL: String
    let clientID: String
    let clientSecret: String
    let scope: String?
    let client: HTTPClient
    let logger: Logger
    private var cached: (token: String, expiresAt: UInt64)?

    init(tokenURL: String, clientID: String, clientSecret: String, scope: String?, client: HTTPClient, logger: Logger) {
        self.tokenURL = tokenURL
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.scope = scope
        self.client = client
        self.logger = logger
    }

    func invalidate() { cached = nil }

    func token() async throws -> String {
        // Refresh 60 s (or a tenth of the lifetime) before expiry.
        if let c = cached, monotonicNanos() < c.expiresAt { return c.token }
        var form = "grant_type=client_credentials&client_id=\(formEncode(clientID))&client_secret=\(formEncode(clientSecret))"
        if let scope { form += "&scope=\(formEncode(scope))" }
        var req = HTTPClientRequest(url: tokenURL)
        req.method = .POST
        req.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        req.headers.add(name: "Accept", value: "application/json")
        req.body = .bytes(ByteBuffer(string: form))
        let resp = try await client.execute(req, timeout: .seconds(15))
        let body = try await resp.body.collect(upTo: 64 * 1024)
        guard resp.status.code == 200 else { throw UplinkError("token endpoint answered HTTP \(resp.status.code)") }
        let json = try JSONParser.parse(Array(body.readableBytesView))
        guard case .string(let token)? = json["access_token"], !token.isEmpty else { throw UplinkError("token endpoint answer has no access_token") }
        var lifetime: Double = 3600
        if case .number(let e)? = json["expires_in"] { lifetime = e }
        let margin = min(60, lifetime / 10)
        cached = (token, monotonicNanos() + UInt64(max(1, lifetime - margin) * 1e9))
        logger.info("OAuth2 token obtained", metadata: ["oauth2.expires_in_s": "\(Int(lifetime))"])
        return token
    }

    private func formEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            if (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x7E {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let h = String(b, radix: 16, uppercase: true)
                out += "%" + (h.count == 1 ? "0" + h : h)
            }
        }
        return out
    }
}

/// A token bucket for metered links: at most `bytesPerSecond` on average, bursts of one second.
final class ByteRateLimiter: Sendable {
    private let rate: Double
    private let state: Mutex<(tokens: Double, last: UInt64)>

    init(bytesPerSecond: Int64) {
        rate = Double(bytesPerSecond)
        state = Mutex((Double(bytesPerSecond), monotonicNanos()))
    }

    /// Sync use (the MQTT loop): may another message go now?
    func mayTake() -> Bool {
        state.withLock { s in
            let now = monotonicNanos()
            s.tokens = min(rate, s.tokens + Double(now - s.last) / 1e9 * rate)
            s.last = now
            return s.tokens > 0
        }
    }

    func take(_ bytes: Int) { state.withLock { $0.tokens -= Double(bytes) } }

    func wait(bytes: Int) async {
        let delay: Double = state.withLock { s in
            let now = monotonicNanos()
            s.tokens = min(rate, s.tokens + Double(now - s.last) / 1e9 * rate)
            s.last = now
            s.tokens -= Double(bytes)
            return s.tokens >= 0 ? 0 : -s.tokens / rate
        }
        if delay > 0 { try? await Task.sleep(for: .milliseconds(Int64(delay * 1000))) }
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
