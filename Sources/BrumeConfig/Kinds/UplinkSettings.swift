import BrumeCore
import BrumeRules

#if canImport(Glibc)
import Glibc
#endif

extension Builder {
    func connection(_ r: TableReader, defaultClientID: String, allowSeveral: Bool = false) -> MQTTConnection? {
        var alternates: [BrokerURL] = []
        let urlText: String
        if allowSeveral, r.table["urls"] != nil {
            if r.table["url"] != nil {
                r.error(r.table.entry("urls")!.keyPosition, "give \"url\" or \"urls\", not both")
                _ = r.node("url")
                _ = r.node("urls")
                return nil
            }
            guard let list = r.stringArray("urls"), !list.isEmpty else { r.error(r.position(of: "urls"), "\"urls\" needs at least one broker URL"); return nil }
            var parsed: [BrokerURL] = []
            for (u, pos) in list {
                switch BrokerURL.parse(u) {
                case .success(let b): parsed.append(b)
                case .failure(let why): r.error(pos, "invalid url \"\(u)\": \(why)")
                }
            }
            guard parsed.count == list.count else { return nil }
            if Set(parsed.map(\.tls)).count > 1 { r.error(r.position(of: "urls"), "the brokers of \"urls\" must all be mqtt:// or all mqtts://"); return nil }
            urlText = list[0].0
            alternates = Array(parsed.dropFirst())
        } else {
            guard let u = r.string("url", required: true) else { return nil }
            urlText = u
        }
        let url: BrokerURL
        switch BrokerURL.parse(urlText) {
        case .success(let u): url = u
        case .failure(let why): r.error(r.position(of: "url"), "invalid url \"\(urlText)\": \(why)"); return nil
        }
        let clientID = r.string("client_id") ?? defaultClientID
        if clientID.isEmpty || clientID.utf8.count > 128 { r.error(r.position(of: "client_id"), "\"client_id\" must be 1 to 128 bytes") }
        let username = r.string("username")
        let passwordFile = r.string("password_file")
        if passwordFile != nil && username == nil { r.error(r.position(of: "password_file"), "\"password_file\" needs \"username\" too") }
        var keepAlive = r.duration("keepalive", min: 5000) ?? 30_000
        if keepAlive > 65_535_000 {
            r.error(r.position(of: "keepalive"), "\"keepalive\" is at most 65535 s (18h12m15s), the MQTT limit")
            keepAlive = 65_535_000
        }
        var tls: TLSConfig?
        if let t = r.subtable("tls", context: "\(r.context) tls") {
            tls = TLSConfig(caFile: t.string("ca_file"), certFile: t.string("cert_file"), keyFile: t.string("key_file"), verifyHostname: t.bool("verify_hostname") ?? true)
            if (tls!.certFile == nil) != (tls!.keyFile == nil) {
                let at = t.table["cert_file"]?.position ?? t.table["key_file"]?.position ?? t.table.position
                t.error(at, "\"cert_file\" and \"key_file\" go together (the client certificate and its key)")
            }
            t.finish()
        }
        if url.tls && tls == nil { tls = TLSConfig(caFile: nil, certFile: nil, keyFile: nil, verifyHostname: true) }
        if !url.tls && tls != nil { r.error(r.position(of: "url"), "a tls table needs an mqtts:// url, got \"\(urlText)\"") }
        var conn = MQTTConnection(url: url, clientID: clientID, username: username, passwordFile: passwordFile, tls: tls, keepAliveSeconds: Int(keepAlive / 1000))
        conn.alternates = alternates
        return conn
    }

    func buildUplink(name: String, _ r: TableReader, gateway: String) -> UplinkConfig? {
        defer { r.finish() }
        if !name.unicodeScalars.allSatisfy(isNameScalar) { r.error(r.table.position, "uplink name \"\(name)\" may use only letters, digits, '.', '_' and '-'") }
        guard let kindName = r.oneOf("kind", ["mqtt", "http"]) else {
            if r.table["kind"] == nil { r.error(r.table.position, "missing required key \"kind\" (\"mqtt\" or \"http\")") }
            r.markAllKnown()
            return nil
        }
        let maxReadings = r.int("batch_max_readings", range: 1...50_000) ?? 500
        let maxDelay = r.duration("batch_max_delay", min: 0) ?? 1000
        let inflight = r.int("max_inflight", range: 1...1000) ?? 8
        let hist = r.duration("historical_after", min: 0) ?? 10_000
        var match: [String] = []
        if let m = r.stringArray("match") {
            for (g, pos) in m {
                if case .failure(let e) = Glob.parse(g) { r.error(pos, "\"match\": \"\(g)\" \(e)") } else { match.append(g) }
            }
        }
        var cap: Int64?
        if let c = r.size("max_bytes_per_second", min: 1024) { cap = c }
        let maxBytes = r.size("batch_max_bytes", min: 1024).map { Int(min($0, 256 << 20)) }
        let perDay = r.size("max_bytes_per_day", min: 64 << 10)
        if kindName == "http" {
            guard let http = buildHTTPSink(r) else { return nil }
            var up = UplinkConfig(name: name, kind: .http, mqtt: nil, http: http, topicPrefix: "", batchMaxReadings: Int(maxReadings),
                                  batchMaxDelayMillis: maxDelay, maxInflight: 1, historicalAfterMillis: hist)
            up.match = match
            up.maxBytesPerSecond = cap
            up.batchMaxBytes = maxBytes
            up.maxBytesPerDay = perDay
            return up
        }
        let version = r.oneOf("mqtt_version", ["auto", "5", "3.1.1"]) ?? "auto"
        let compression = r.oneOf("compression", ["none", "gzip"]) ?? "none"
        let conn = connection(r, defaultClientID: "brume-\(gateway)-\(name)", allowSeveral: true)
        let prefix = r.string("topic_prefix") ?? "brume/{gateway}"
        if prefix.contains("+") || prefix.contains("#") || prefix.isEmpty { r.error(r.position(of: "topic_prefix"), "\"topic_prefix\" must be a non-empty topic without wildcards") }
        let format = mqttFormat(r, gateway: gateway, compression: compression)
        guard let conn, let format else { return nil }
        var up = UplinkConfig(name: name, kind: .mqtt, mqtt: conn, http: nil, topicPrefix: prefix.replacingAll("{gateway}", with: gateway),
                              batchMaxReadings: Int(maxReadings), batchMaxDelayMillis: maxDelay, maxInflight: Int(inflight), historicalAfterMillis: hist)
        up.match = match
        up.maxBytesPerSecond = cap
        up.batchMaxBytes = maxBytes
        up.mqttVersion = version
        up.compression = compression
        up.maxBytesPerDay = perDay
        up.format = format
        return up
    }

    /// `format` and the keys of each format; keys of another format are errors that say whose they are.
    func mqttFormat(_ r: TableReader, gateway: String, compression: String) -> MQTTFormatConfig? {
        let name = r.oneOf("format", ["brume", "senml", "per_reading", "sparkplug_b", "thingsboard"]) ?? (r.table["format"] == nil ? "brume" : nil)
        let owners: [String: String] = ["topic": "per_reading", "value": "per_reading", "retain": "per_reading",
                                        "homeassistant_discovery": "per_reading", "discovery_prefix": "per_reading",
                                        "group_id": "sparkplug_b", "edge_node_id": "sparkplug_b", "sparkplug_commands": "sparkplug_b",
                                        "rpc": "thingsboard"]
        guard let name else { r.markAllKnown(); return nil }
        if name != "brume", compression != "none" {
            r.error(r.position(of: "compression"), "\"compression\" applies to format = \"brume\" only (\(name) consumers expect plain payloads)")
        }
        for (key, owner) in owners.sorted(by: { $0.key < $1.key }) where owner != name {
            if let e = r.table.entry(key) {
                r.error(e.keyPosition, "\"\(key)\" applies to format = \"\(owner)\", not \"\(name)\"")
                _ = r.node(key)
            }
        }
        var ok = true
        switch name {
        case "senml": return .senml
        case "per_reading":
            let topic = (r.string("topic") ?? "brume/{gateway}/{device}/{metric}")
            if topic.contains("+") || topic.contains("#") || topic.isEmpty || !topic.contains("{device}") || !topic.contains("{metric}") {
                r.error(r.position(of: "topic"), "\"topic\" must be a topic without wildcards holding {device} and {metric}, got \"\(topic)\""); ok = false
            }
            let unknown = placeholders(in: topic).filter { !["gateway", "device", "metric"].contains($0) }
            if let u = unknown.first { r.error(r.position(of: "topic"), "\"topic\": unknown placeholder {\(u)} (use {gateway}, {device}, {metric})"); ok = false }
            let json = (r.oneOf("value", ["plain", "json"]) ?? "plain") == "json"
            let retain = r.bool("retain") ?? false
            let discovery = r.bool("homeassistant_discovery") ?? false
            let prefix = r.string("discovery_prefix") ?? "homeassistant"
            if r.table["discovery_prefix"] != nil && !discovery {
                r.error(r.position(of: "discovery_prefix"), "\"discovery_prefix\" needs homeassistant_discovery = true"); ok = false
            }
            if prefix.isEmpty || prefix.contains("+") || prefix.contains("#") { r.error(r.position(of: "discovery_prefix"), "\"discovery_prefix\" must be a topic without wildcards"); ok = false }
            guard ok else { return nil }
            return .perReading(PerReadingFormat(topic: topic.replacingAll("{gateway}", with: gateway), json: json, retain: retain,
                                                discoveryPrefix: discovery ? prefix : nil))
        case "sparkplug_b":
            let group = r.string("group_id", required: true)
            let node = r.string("edge_node_id") ?? gateway
            for (key, v) in [("group_id", group ?? "x"), ("edge_node_id", node)] where v.isEmpty || v.contains(where: { "/+#".contains($0) }) {
                r.error(r.position(of: key), "\"\(key)\" must be non-empty without '/', '+' or '#' (Sparkplug ids are topic levels), got \"\(v)\""); ok = false
            }
            let commands = r.bool("sparkplug_commands") ?? false
            guard ok, let group else { return nil }
            return .sparkplugB(SparkplugFormat(groupID: group, edgeNodeID: node, commands: commands))
        case "thingsboard":
            return .thingsboard(ThingsBoardFormat(rpc: r.bool("rpc") ?? false))
        default:
            return .brume
        }
    }

    func buildHTTPSink(_ r: TableReader) -> HTTPSinkConfig? {
        var ok = true
        guard let url = r.string("url", required: true) else { return nil }
        let lower = url.lowercased()
        if !(lower.hasPrefix("http://") || lower.hasPrefix("https://")) || url.count < 10 {
            r.error(r.position(of: "url"), "\"url\" must be an http:// or https:// URL, got \"\(url)\""); ok = false
        }
        if let at = url.firstIndex(of: "@"), let scheme = url.firstRange(of: "://"), at > scheme.upperBound, !url[scheme.upperBound..<at].contains("/") {
            r.error(r.position(of: "url"), "credentials do not belong in the URL: use bearer_token_file or [oauth2]"); ok = false
        }
        let format = r.oneOf("format", ["json", "influx", "senml"]).flatMap(HTTPSinkConfig.Format.init(rawValue:)) ?? .json
        let gzip = r.bool("gzip") ?? true
        let timeout = r.duration("timeout", min: 100) ?? 10_000
        let measurement = r.oneOf("influx_measurement", ["metric", "device"]) ?? "metric"
        if format != .influx && r.table["influx_measurement"] != nil {
            r.error(r.table.entry("influx_measurement")!.keyPosition, "\"influx_measurement\" applies to format = \"influx\""); ok = false
        }
        var auth = HTTPSinkConfig.Auth.none
        let bearer = r.string("bearer_token_file")
        if let b = bearer { auth = .bearer(tokenFile: b) }
        let influxToken = r.string("token_file")
        if let t = influxToken {
            if bearer != nil { r.error(r.position(of: "token_file"), "use bearer_token_file or token_file, not both"); ok = false }
            if format != .influx { r.error(r.table.entry("token_file")!.keyPosition, "\"token_file\" (Authorization: Token, InfluxDB 2.x) applies to format = \"influx\"; other endpoints take bearer_token_file"); ok = false }
            auth = .token(tokenFile: t)
        }
        if format == .influx, bearer != nil, url.contains("/api/v2/") {
            r.warning(r.position(of: "bearer_token_file"), "InfluxDB 2.x (/api/v2/write) expects \"Authorization: Token\": use token_file (bearer_token_file sends \"Bearer\", which InfluxDB 2.x refuses with 401)")
        }
        if let o = r.subtable("oauth2", context: "\(r.context) oauth2") {
            if bearer != nil || influxToken != nil { o.error(o.table.position, "use bearer_token_file, token_file or [oauth2], not several"); ok = false }
            let tokenURL = o.string("token_url", required: true)
            let clientID = o.string("client_id", required: true)
            let secret = o.string("client_secret_file", required: true)
            let scope = o.string("scope")
            if let t = tokenURL, !t.lowercased().hasPrefix("http") { o.error(o.position(of: "token_url"), "\"token_url\" must be an http(s) URL"); ok = false }
            o.finish()
            if let tokenURL, let clientID, let secret { auth = .oauth2(tokenURL: tokenURL, clientID: clientID, clientSecretFile: secret, scope: scope) } else { ok = false }
        }
        var tls: TLSConfig?
        if let t = r.subtable("tls", context: "\(r.context) tls") {
            tls = TLSConfig(caFile: t.string("ca_file"), certFile: t.string("cert_file"), keyFile: t.string("key_file"), verifyHostname: t.bool("verify_hostname") ?? true)
            if (tls!.certFile == nil) != (tls!.keyFile == nil) {
                t.error(t.table["cert_file"]?.position ?? t.table["key_file"]?.position ?? t.table.position, "\"cert_file\" and \"key_file\" go together (the client certificate and its key)"); ok = false
            }
            t.finish()
            if !lower.hasPrefix("https://") { r.error(r.position(of: "url"), "a tls table needs an https:// url, got \"\(url)\""); ok = false }
        }
        if format == .influx, let p = HTTPSinkConfig.queryValue("precision", in: url) {
            // Brume stamps readings with millisecond times, several per millisecond in a burst;
            // InfluxDB keeps one point per series and timestamp.
            switch p {
            case "u", "us", "n", "ns": break
            case "ms":
                r.warning(r.position(of: "url"), "precision=ms: readings of one series stamped in the same millisecond (a burst) overwrite each other in InfluxDB; leave precision out (brume writes microseconds) or use precision=u")
            case "s", "m", "h":
                r.error(r.position(of: "url"), "precision=\(p) cannot hold the readings' millisecond times: readings of a series within one \(p == "s" ? "second" : p == "m" ? "minute" : "hour") would overwrite each other; leave precision out (brume writes microseconds)"); ok = false
            default:
                r.error(r.position(of: "url"), "unknown precision=\(p) (InfluxDB takes n, u, ms, s; 2.x ns, us, ms, s)"); ok = false
            }
        }
        guard ok else { return nil }
        return HTTPSinkConfig(url: url, format: format, gzip: gzip, timeoutMillis: timeout, auth: auth, tls: tls, influxMeasurement: measurement)
    }
}

/// The `{name}`s of a template.
func placeholders(in template: String) -> [String] {
    var out: [String] = []
    var rest = Substring(template)
    while let open = rest.firstIndex(of: "{") {
        guard let close = rest[open...].firstIndex(of: "}") else { break }
        out.append(String(rest[rest.index(after: open)..<close]))
        rest = rest[rest.index(after: close)...]
    }
    return out
}
