import AsyncHTTPClient
import BrumeCore
import BrumeStore
import CompressNIO
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// What an HTTP(S) uplink needs (the Runtime maps `[uplink.*] kind = "http"` to it).
public struct HTTPSinkOptions: Sendable {
    public enum Format: String, Sendable { case json, influx, senml }
    public enum Auth: Sendable {
        case none
        case bearer(token: String)
        /// InfluxDB 2.x: `Authorization: Token ...`.
        case token(String)
        case oauth2(tokenURL: String, clientID: String, clientSecret: String, scope: String?)
    }
    public struct TLS: Sendable {
        public var caFile: String?
        public var certFile: String?
        public var keyFile: String?
        public var verifyHostname: Bool
        public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, verifyHostname: Bool = true) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
            self.verifyHostname = verifyHostname
        }
    }
    public var url: String
    /// For logs and status: credentials in the query string masked.
    public var displayURL: String
    public var format: Format
    public var gzip: Bool
    public var timeoutMillis: Int64
    public var auth: Auth
    public var tls: TLS?
    public var influxMeasurement: InfluxLineProtocol.Measurement
    /// InfluxDB line protocol: the timestamp unit the URL asks for (`precision=`).
    public var influxPrecision: InfluxLineProtocol.Precision

    public init(url: String, displayURL: String? = nil, format: Format = .json, gzip: Bool = true, timeoutMillis: Int64 = 10_000,
                auth: Auth = .none, tls: TLS? = nil, influxMeasurement: InfluxLineProtocol.Measurement = .metric,
                influxPrecision: InfluxLineProtocol.Precision = .milliseconds) {
        self.url = url
        self.displayURL = displayURL ?? url
        self.format = format
        self.gzip = gzip
        self.timeoutMillis = timeoutMillis
        self.auth = auth
        self.tls = tls
        self.influxMeasurement = influxMeasurement
        self.influxPrecision = influxPrecision
    }
}

/// An HTTP(S) uplink: a batch is one POST (v1 JSON or InfluxDB line protocol, gzip); only a
/// 2xx answer to that POST is delivery.
///
/// Redirects are never followed: a POST redirected to a GET (301/302/303) would "succeed"
/// without the body, so any 3xx is a configuration fault (the URL is wrong), shown loudly,
/// with the backlog held. Outcomes: 2xx accepted; network errors, 5xx, 408, 429 retried
/// (429/503 honour `Retry-After`); 401 refreshes an OAuth2 token once, then like 403, 404,
/// 405 and other endpoint faults it holds the backlog (a bad endpoint must not dead-letter
/// the backlog batch by batch); 413 splits the batch; 400, 409, 422 and other 4xx refuse
/// this batch only: it becomes a dead letter (`brume buffer dead-letters`).
public final class HTTPSink: BatchSink, Sendable {
    public let options: HTTPSinkOptions
    public let gatewayID: String
    private let logger: Logger
    private let client: HTTPClient
    private let stateGauge = Gauge<UplinkState>(.connecting)
    private let oauth: OAuth2TokenSource?
    private let inflight = Atomic<Int>(0)

    public init(options: HTTPSinkOptions, gatewayID: String, logger: Logger) throws {
        self.options = options
        self.gatewayID = gatewayID
        self.logger = logger
        var tls = TLSConfiguration.makeClientConfiguration()
        if let t = options.tls {
            if let ca = t.caFile { tls.trustRoots = .file(ca) }
            if let cert = t.certFile, let key = t.keyFile {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            tls.certificateVerification = t.verifyHostname ? .fullVerification : .noHostnameVerification
        }
        var cfg = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                           timeout: .init(connect: .seconds(5), read: .milliseconds(options.timeoutMillis)))
        cfg.decompression = .disabled
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: cfg)
        if case .oauth2(let url, let id, let secret, let scope) = options.auth {
            oauth = OAuth2TokenSource(tokenURL: url, clientID: id, clientSecret: secret, scope: scope, client: client, logger: logger)
        } else {
            oauth = nil
        }
    }

    public var kind: String { "http" }
    public var endpoint: String { options.displayURL }
    public var window: Int { 1 }
    public var connection: UInt64? { 1 }
    public var state: UplinkState { stateGauge.current }
    public var maxBodyBytes: Int? { nil }

    public func start(poke: @escaping @Sendable () -> Void) {
        logger.info("HTTP uplink starting", metadata: ["uplink.url": "\(options.displayURL)", "uplink.format": "\(options.format.rawValue)", "uplink.gzip": "\(options.gzip)"])
    }

    public func stop(drain: Duration) async {
        // Let the request in flight finish (bounded), then close.
        let deadline = ContinuousClock.now + drain + .seconds(1)
        while ContinuousClock.now < deadline, inflight.load(ordering: .acquiring) > 0 { try? await Task.sleep(for: .milliseconds(20)) }
        try? await client.shutdown()
        stateGauge.set(.stopped)
    }

    public func encode(_ batch: BatchRecord, id: String, readings: [Reading], seqs: [Int64]?, into body: inout [UInt8]) -> Int {
        switch options.format {
        case .json: WireFormat.encodeTelemetry(gateway: gatewayID, batchID: id, historical: batch.historical, readings: readings, into: &body)
        case .influx: InfluxLineProtocol.encode(readings, gateway: gatewayID, measurement: options.influxMeasurement, precision: options.influxPrecision,
                                            seq: { i in seqs?[i] ?? batch.first + Int64(i) }, into: &body)
        case .senml: SenML.encode(gateway: gatewayID, readings: readings, into: &body)
        }
        let plain = body.count
        if options.gzip {
            var plainBuffer = ByteBuffer(bytes: body)
            if let z = try? plainBuffer.compress(with: .gzip()) { body = Array(z.readableBytesView) }
        }
        return plain
    }

    public func deliver(_ batch: EncodedBatch, done: @escaping @Sendable (DeliveryOutcome) -> Void) {
        inflight.add(1, ordering: .relaxed)
        Task {
            let outcome = await self.post(batch)
            self.inflight.subtract(1, ordering: .releasing)
            done(outcome)
        }
    }

    private func post(_ batch: EncodedBatch) async -> DeliveryOutcome {
        var refreshed = false
        while true {
            var req = HTTPClientRequest(url: options.url)
            req.method = .POST
            req.headers.add(name: "Content-Type", value: options.format == .json ? "application/json"
                                : options.format == .senml ? "application/senml+json" : "text/plain; charset=utf-8")
            if options.gzip { req.headers.add(name: "Content-Encoding", value: "gzip") }
            req.headers.add(name: "X-Brume-Batch", value: batch.id)
            req.headers.add(name: "User-Agent", value: "brume")
            do { try await authorize(&req) } catch {
                return .retry(reason: "oauth2_token", detail: "cannot get an OAuth2 token: \(error)", after: nil)
            }
            req.body = .bytes(ByteBuffer(bytes: batch.body))
            let resp: HTTPClientResponse
            do {
                resp = try await client.execute(req, timeout: .milliseconds(options.timeoutMillis))
            } catch {
                stateGauge.set(.offline)
                return .retry(reason: "network", detail: "cannot reach \(options.displayURL): \(error)", after: nil)
            }
            let code = Int(resp.status.code)
            let text = (try? await resp.body.collect(upTo: 4096)).map { String(buffer: $0) } ?? ""
            let said = "HTTP \(code)\(text.isEmpty ? "" : ": " + String(text.prefix(200)))"
            if code == 401, oauth != nil, !refreshed {
                refreshed = true
                await oauth?.invalidate()
                continue
            }
            let outcome = HTTPSink.classify(code, said: said, location: resp.headers.first(name: "Location"), retryAfter: retryAfter(resp.headers))
            switch outcome {
            case .accepted: stateGauge.set(.online)
            case .retry where code >= 500 || code == 408: stateGauge.set(.offline)
            default: break
            }
            return outcome
        }
    }

    /// The Authorization header of the configured credentials (an OAuth2 token is fetched or
    /// reused; throws when it cannot be had).
    private func authorize(_ req: inout HTTPClientRequest) async throws {
        switch options.auth {
        case .none: break
        case .bearer(let token): req.headers.add(name: "Authorization", value: "Bearer \(token)")
        case .token(let token): req.headers.add(name: "Authorization", value: "Token \(token)")
        case .oauth2: req.headers.add(name: "Authorization", value: "Bearer \(try await oauth!.token())")
        }
    }

    /// `brume check --connect`: the TCP connection, the TLS handshake and the credentials (an
    /// OAuth2 token is fetched) with a HEAD request, which stores nothing at the endpoint. The
    /// endpoint's answer to a real batch is not known until one is sent.
    public func probe() async -> Result<String, UplinkError> {
        var req = HTTPClientRequest(url: options.url)
        req.method = .HEAD
        req.headers.add(name: "User-Agent", value: "brume")
        var how = ""
        do {
            try await authorize(&req)
            if case .oauth2 = options.auth { how = "OAuth2 token obtained; " }
        } catch {
            return .failure(UplinkError("cannot get an OAuth2 token: \(error)"))
        }
        let resp: HTTPClientResponse
        do {
            resp = try await client.execute(req, timeout: .milliseconds(options.timeoutMillis))
        } catch {
            return .failure(UplinkError("cannot reach \(options.displayURL): \(error)"))
        }
        let code = Int(resp.status.code)
        switch code {
        case 401, 403: return .failure(UplinkError("\(how)the endpoint refuses our credentials (HTTP \(code) to HEAD): check the token or the OAuth2 client"))
        case 300..<400: return .failure(UplinkError("the endpoint redirects\(resp.headers.first(name: "Location").map { " to \($0)" } ?? "") (HTTP \(code)): a redirected POST is not delivery, fix the url"))
        default: return .success("\(how)HTTP \(code) to HEAD\(options.url.hasPrefix("https") ? " over TLS" : "") (no batch sent)")
        }
    }

    /// What an HTTP status means for a batch (pure; tested without I/O).
    static func classify(_ code: Int, said: String, location: String?, retryAfter: Duration?) -> DeliveryOutcome {
        switch code {
        case 200..<300:
            return .accepted
        case 300..<400:
            let to = location.map { " to \($0)" } ?? ""
            return .misconfigured(reason: "http_\(code)", detail: "the endpoint redirects\(to) (\(said)); a redirected POST is not delivery: fix the url")
        case 401, 403:
            return .misconfigured(reason: "http_\(code)", detail: "the endpoint refuses our credentials (\(said)): check the token or the OAuth2 client")
        case 404, 405, 410, 414, 415, 421, 426, 431:
            return .misconfigured(reason: "http_\(code)", detail: "the endpoint does not take this request (\(said)): check the url and format")
        case 413:
            return .tooLarge(detail: said)
        case 408, 425, 429, 500..<600:
            return .retry(reason: "http_\(code)", detail: "the endpoint refused the batch for now (\(said))", after: retryAfter)
        default:
            // 400, 409, 422 ...: this batch is refused, not the endpoint.
            return .rejected(reason: "http_\(code)", status: code, detail: said)
        }
    }

    /// `Retry-After: 7` (seconds; the HTTP-date form is left to the backoff).
    private func retryAfter(_ headers: HTTPHeaders) -> Duration? {
        guard let v = headers.first(name: "Retry-After")?.trimmingCharacters(in: " "), let s = Int64(v), s >= 0 else { return nil }
        return .seconds(min(s, 3600))
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
        cached = (token, TokenLifetime.deadline(json, now: monotonicNanos()))
        logger.info("OAuth2 token obtained", metadata: ["oauth2.refresh_in_s": "\(Int(TokenLifetime.useFor(json)))"])
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

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
