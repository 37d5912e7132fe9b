import BrumeConfig
import BrumeCore
import BrumeRules
import Hummingbird
import Logging
import HTTPTypes
import NIOCore

/// The local HTTP API (Hummingbird): the technician's status page and tools,
/// and Prometheus. Bound to 127.0.0.1 by default; anywhere else only with a
/// bearer token (`[api] token_file`), checked on every request but the probes.
///
///   GET  /                         the live status page (self-contained HTML)
///   GET  /healthz                  200 while the process serves requests
///   GET  /readyz                   200 once running with a live outbox writer, else 503
///   GET  /metrics                  Prometheus text format
///   GET  /api/v1/status            the state as JSON (StatusReport.swift)
///   GET  /api/v1/readings/latest   latest value per stream; ?match=GLOB (repeatable)
///   GET  /api/v1/stream            server-sent events, one reading per event; ?match=GLOB
///   POST /api/v1/reload            re-read the configuration; the result as JSON
///   POST /api/v1/buffer/purge?confirm=yes   drop the buffered readings (counted)
enum APIServer {
    static func makeRouter(gateway: Gateway, token: String?, listenHost: String = "127.0.0.1") -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: BrowserGuardMiddleware(listenHost: listenHost))
        router.add(middleware: TokenMiddleware(token: token))
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                     body: .init(byteBuffer: ByteBuffer(string: statusPageHTML)))
        }
        router.get("/healthz") { _, _ in text("ok\n") }
        router.get("/readyz") { _, _ in
            let (ready, why) = gateway.readiness()
            return Response(status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: why + "\n")))
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                     body: .init(byteBuffer: ByteBuffer(bytes: gateway.metrics.render(gateway))))
        }
        router.get("/api/v1/status") { _, _ in json(gateway.statusJSON()) }
        router.get("/api/v1/readings/latest") { request, _ in
            switch globs(request) {
            case .success(let g): return json(gateway.latestJSON(match: g))
            case .failure(let r): return r.response
            }
        }
        router.get("/api/v1/stream") { request, _ -> Response in
            let match: [Glob]
            switch globs(request) {
            case .success(let g): match = g
            case .failure(let r): return r.response
            }
            guard let (id, stream) = gateway.broadcaster.subscribe(match: match) else {
                return Response(status: .serviceUnavailable, headers: [.contentType: "text/plain; charset=utf-8", .retryAfter: "5"],
                                body: .init(byteBuffer: ByteBuffer(string: "too many live streams are open\n")))
            }
            let broadcaster = gateway.broadcaster
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"],
                            body: ResponseBody { writer in
                                defer { broadcaster.unsubscribe(id) }
                                try await writer.write(ByteBuffer(string: "retry: 2000\n: brume live readings\n\n"))
                                // A comment every 15 s keeps idle connections (and proxies) open.
                                let pings = Task { [id] in
                                    while !Task.isCancelled {
                                        try? await Task.sleep(for: .seconds(15))
                                        broadcaster.ping(id)
                                    }
                                }
                                defer { pings.cancel() }
                                for await line in stream {
                                    var buf = ByteBuffer()
                                    if line.isEmpty {
                                        buf.writeString(": ping\n\n")
                                    } else {
                                        buf.writeString("data: ")
                                        buf.writeBytes(line)
                                        buf.writeString("\n\n")
                                    }
                                    try await writer.write(buf)
                                }
                                try await writer.finish(nil)
                            })
        }
        router.post("/api/v1/reload") { _, _ in
            let r = gateway.reload()
            return json(r.json, status: r.ok ? .ok : .unprocessableContent)
        }
        router.post("/api/v1/buffer/purge") { request, _ in
            guard request.uri.queryParameters["confirm"] == "yes" else {
                return json(.object([JSONMember(key: "error", value: .string("add ?confirm=yes: this drops every buffered reading"))]), status: .badRequest)
            }
            let n = gateway.outbox.purge()
            return json(.object([JSONMember(key: "purged", value: .number(Double(n)))]))
        }
        return router
    }

    static func text(_ s: String) -> Response {
        Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    static func json(_ v: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        var out: [UInt8] = []
        v.appendJSON(to: &out)
        out.append(UInt8(ascii: "\n"))
        return Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(bytes: out)))
    }

    struct BadRequest: Error { var response: Response }

    static func globs(_ request: Request) -> Result<[Glob], BadRequest> {
        var out: [Glob] = []
        for m in request.uri.queryParameters[values: "match"] {
            switch Glob.parse(String(m)) {
            case .success(let g): out.append(g)
            case .failure(let e):
                return .failure(BadRequest(response: json(.object([JSONMember(key: "error", value: .string("match \"\(m)\" \(e)"))]), status: .badRequest)))
            }
        }
        return .success(out)
    }

    /// Runs the server until the gateway stops. A port already in use is logged
    /// and the gateway runs on without its API: the readings matter more.
    static func run(gateway: Gateway, config: APISection, logger: Logger) async {
        var token: String?
        if let file = config.tokenFile {
            do {
                token = try Gateway.secret(file, logger: logger)
            } catch {
                logger.error("local API disabled: cannot read its token file", metadata: ["api.token_file": "\(file)", "error": "\(error)"])
                return
            }
            if token?.isEmpty != false {
                logger.error("local API disabled: the token file is empty", metadata: ["api.token_file": "\(file)"])
                return
            }
        }
        var quiet = logger
        quiet.logLevel = .warning
        let authMode = token == nil ? "none (loopback)" : "bearer token"
        let router = makeRouter(gateway: gateway, token: token, listenHost: config.host)
        let app = Application(router: router,
                              configuration: .init(address: .hostname(config.host, port: config.port), serverName: "brume"),
                              onServerRunning: { channel in
                                  logger.info("local API listening", metadata: ["api.address": "\(channel.localAddress.map { "\($0)" } ?? "\(config.host):\(config.port)")",
                                                                                "api.auth": "\(authMode)"])
                              },
                              logger: quiet)
        do {
            try await app.runService()
        } catch {
            logger.error("local API disabled: cannot serve", metadata: ["api.address": "\(config.host):\(config.port)", "error": "\(error)"])
        }
    }
}

/// What a web page the technician has open must not do to the gateway on the same machine
/// (or through an `ssh -L` tunnel):
/// - **DNS rebinding**: a page on evil.example whose name resolves to 127.0.0.1 talks to the
///   API with its own name in `Host`. A loopback listener answers only requests for a loopback
///   name (`localhost`, `127.0.0.1`, `[::1]`, any port) or the listen address: 421 otherwise.
/// - **Cross-site requests** (CSRF): a form or `fetch` from another site can POST without
///   reading the answer. A state-changing request (anything but GET/HEAD) needs the header
///   `X-Brume-Request: 1` — which a cross-site request cannot carry without a CORS preflight,
///   and none is ever granted — and, if the browser sends `Origin`, the same host: 403 otherwise.
/// - **Large bodies**: no endpoint takes one; more than 64 KiB is refused (413).
/// `brume status/reload/buffer` send the header; the status page only reads.
struct BrowserGuardMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let listenHost: String
    static let headerName = HTTPField.Name("X-Brume-Request")!

    var loopbackListener: Bool {
        listenHost == "localhost" || listenHost == "::1" || listenHost.hasPrefix("127.")
    }

    /// The host part of a Host or Origin authority ("[::1]:9669" → "::1", "localhost:80" → "localhost").
    static func hostPart(_ authority: Substring) -> String {
        var a = authority
        if a.hasPrefix("[") {
            if let close = a.firstIndex(of: "]") { return String(a[a.index(after: a.startIndex)..<close]).lowercased() }
            return String(a).lowercased()
        }
        if let colon = a.lastIndex(of: ":") { a = a[..<colon] }
        return String(a).lowercased()
    }

    static func isLoopbackName(_ h: String) -> Bool {
        h == "localhost" || h == "::1" || h.hasPrefix("127.") && h.split(separator: ".").count == 4 && h.split(separator: ".").allSatisfy { UInt8($0) != nil }
    }

    func refuse(_ status: HTTPResponse.Status, _ why: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: why + "\n")))
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let host = Self.hostPart(Substring(request.head.authority ?? ""))
        // (No Host at all — an HTTP/1.0 tool — is no browser: browsers always send one.)
        if loopbackListener && !(host.isEmpty || Self.isLoopbackName(host) || host == listenHost.lowercased()) {
            return refuse(.misdirectedRequest, "this API answers requests for localhost only (Host \"\(host.prefix(100))\"): a web page cannot reach it by another name")
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > 64 << 10 {
            return refuse(.contentTooLarge, "request body too large")
        }
        if request.method != .get && request.method != .head {
            guard request.headers[Self.headerName] == "1" else {
                return refuse(.forbidden, "a state-changing request needs the header X-Brume-Request: 1 (brume status/reload/buffer send it; a web page of another site cannot)")
            }
            if let origin = request.headers[.origin] {
                let originHost = origin.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map { Self.hostPart($0) } ?? ""
                guard originHost == host else {
                    return refuse(.forbidden, "cross-origin request refused (Origin \(origin.prefix(100)))")
                }
            }
        }
        return try await next(request, context)
    }
}

/// Bearer token (header, or `?token=` for the browser page and its live stream).
struct TokenMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token, request.uri.path != "/healthz", request.uri.path != "/readyz" else { return try await next(request, context) }
        let header = request.headers[.authorization]
        let given = header.map { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : $0 } ?? request.uri.queryParameters["token"].map(String.init)
        guard let given, constantTimeEquals(given, token) else {
            return Response(status: .unauthorized, headers: [.contentType: "text/plain; charset=utf-8", .wwwAuthenticate: "Bearer"],
                            body: .init(byteBuffer: ByteBuffer(string: "a token is required: Authorization: Bearer <token> (see [api] token_file)\n")))
        }
        return try await next(request, context)
    }
}

func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) { diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0) }
    return diff == 0
}
