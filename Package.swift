// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Brume",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "brume", targets: ["brume"]),
        .executable(name: "firmware-sim", targets: ["firmware-sim"]),
        // Libraries, for bench/micro (microbenchmarks live in their own package).
        .library(name: "BrumeCore", targets: ["BrumeCore"]),
        .library(name: "BrumeConfig", targets: ["BrumeConfig"]),
        .library(name: "BrumeRules", targets: ["BrumeRules"]),
        .library(name: "BrumeSerial", targets: ["BrumeSerial"]),
        .library(name: "BrumeStore", targets: ["BrumeStore"]),
        .library(name: "BrumeModbus", targets: ["BrumeModbus"]),
        .library(name: "BrumeLoRaWAN", targets: ["BrumeLoRaWAN"]),
        .library(name: "BrumeFunctions", targets: ["BrumeFunctions"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // No default traits: "FullFoundation" links Foundation with ICU (47 MB), "ConfigurationSupport" swift-configuration; neither is used.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        // Ed25519 signatures of commands (already built for AsyncHTTPClient's TLS stack).
        .package(url: "https://github.com/apple/swift-crypto", "4.0.0"..<"5.0.0"),
        // Sparkplug B payloads (the generated code is committed: no protoc plugin in the build).
        // No default traits: "BinaryDelimitedStreams" imports full Foundation (ICU, +45 MB).
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0", traits: []),
        // WebAssembly fog functions (docs/functions.md). No default traits: the file-system
        // parser, WASI threads and the disassembler are not used (−~1 MB).
        .package(url: "https://github.com/swiftwasm/WasmKit", from: "0.4.2", traits: []),
    ],
    targets: [
        // System libraries (Debian: libmosquitto-dev, libsqlite3-dev, libserialport-dev).
        .systemLibrary(name: "CMosquitto", pkgConfig: "libmosquitto", providers: [.apt(["libmosquitto-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CSerialPort", pkgConfig: "libserialport", providers: [.apt(["libserialport-dev"])]),
        .systemLibrary(name: "CModbus", pkgConfig: "libmodbus", providers: [.apt(["libmodbus-dev"])]),
        // Fault injection only: an SQLite VFS that keeps unsynced writes in memory, so that a
        // kill -9 is a power cut (bench/chaos.sh power-cut, BRUME_FAULT_POWERCUT=1).
        .target(name: "CPowerCut", dependencies: ["CSQLite"]),
        // ntp_adjtime(3), read only: is the system clock synchronised (Glibc's module lacks sys/timex.h).
        .target(name: "CClock"),

        // Vocabulary: readings, values, payload parsing, wire format. No C, no I/O.
        .target(name: "BrumeCore", dependencies: [.product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // gateway.toml -> typed configuration, pure validation with file:line:col diagnostics.
        .target(name: "BrumeConfig", dependencies: ["BrumeCore", "BrumeRules", "BrumeFunctions"], swiftSettings: strict),
        // SQLite outbox (group commit, eviction, batches, acks).
        .target(name: "BrumeStore", dependencies: ["BrumeCore", "CSQLite", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // libmosquitto client + the MQTT source (topic mapping, payload decoding).
        .target(name: "BrumeMQTT", dependencies: ["BrumeCore", "CMosquitto", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // Local rules: filters, transforms, windows, triggers, expression language. Pure, clock-injected.
        .target(name: "BrumeRules", dependencies: ["BrumeCore"], swiftSettings: strict),
        // Serial sensors: termios ports, discovery via libserialport, framers (kv, CSV, JSON lines, NMEA).
        .target(name: "BrumeSerial", dependencies: ["BrumeCore", "CSerialPort", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // Modbus RTU/TCP over libmodbus: one scheduler per bus, register maps, writes.
        .target(name: "BrumeModbus", dependencies: ["BrumeCore", "CModbus", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // The board's own health (sysfs, procfs): SoC temperature, throttling, SD writes, clock sync.
        .target(name: "BrumeBoard", dependencies: ["BrumeCore", "CClock", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // 1-Wire temperature probes through the kernel's w1 sysfs files.
        .target(name: "BrumeOneWire", dependencies: ["BrumeCore", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .systemLibrary(name: "CGPIOD", pkgConfig: "libgpiod", providers: [.apt(["libgpiod-dev"])]),
        .target(name: "BrumeGPIO", dependencies: ["BrumeCore", "CGPIOD", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(name: "BrumeLoRaWAN", dependencies: ["BrumeCore", .product(name: "Logging", package: "swift-log"),
                                                     .product(name: "Crypto", package: "swift-crypto"),
                                                     .product(name: "CryptoExtras", package: "swift-crypto")], swiftSettings: strict),
        // User functions in WebAssembly (WasmKit): sandboxed per call (fuel, memory), the ABI of
        // docs/functions.md, dead letters. Plugged into the rules (RuleFunction) and the payload
        // decoders (PayloadFunction).
        .target(name: "BrumeFunctions", dependencies: [
            "BrumeCore", "BrumeRules", .product(name: "Logging", package: "swift-log"),
            .product(name: "WasmKit", package: "WasmKit"),
            .product(name: "Crypto", package: "swift-crypto"),
        ], swiftSettings: strict),
        // Northbound: the sync loops outbox -> batches -> acks: MQTT (v1 JSON, SenML, per reading,
        // Sparkplug B, ThingsBoard) and HTTP(S) (v1 JSON, SenML or InfluxDB line protocol).
        .target(name: "BrumeUplink", dependencies: [
            "BrumeCore", "BrumeMQTT", "BrumeStore", .product(name: "Logging", package: "swift-log"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "CompressNIO", package: "compress-nio"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], exclude: ["MQTT/Formats/Sparkplug/sparkplug_b.proto"], swiftSettings: strict),
        // Composition: config -> services, signals, shutdown order.
        .target(name: "BrumeRuntime", dependencies: [
            "BrumeCore", "BrumeConfig", "BrumeRules", "BrumeStore", "BrumeMQTT", "BrumeSerial", "BrumeModbus", "BrumeBoard", "BrumeOneWire", "BrumeLoRaWAN", "BrumeGPIO", "BrumeFunctions", "BrumeUplink", "CClock",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Crypto", package: "swift-crypto"),
        ], exclude: ["API/status.html"], swiftSettings: strict),
        .executableTarget(name: "brume", dependencies: [
            "BrumeRuntime", "BrumeConfig", "BrumeCore", "BrumeStore", "BrumeSerial", "BrumeOneWire", "BrumeFunctions", "CPowerCut",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict, linkerSettings: [
            // A small release binary (docs/PERFORMANCE.md, "Binary size"): lld, no dynamic symbol
            // table (crash backtraces are symbolised from the unstripped build or the -dbgsym
            // package), relative relocations packed (DT_RELR, glibc >= 2.36: Debian 12).
            .unsafeFlags(["-use-ld=lld", "-Xlinker", "--no-export-dynamic", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"],
                         .when(platforms: [.linux], configuration: .release)),
        ]),
        .executableTarget(name: "firmware-sim", dependencies: [
            "BrumeCore", "BrumeMQTT", "BrumeSerial", "BrumeLoRaWAN", "CModbus",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "firmware-sim", exclude: ["data"], swiftSettings: strict),

        .target(name: "BrumeTestKit", dependencies: ["BrumeCore"], path: "Tests/BrumeTestKit"),
        .testTarget(name: "BrumeCoreTests", dependencies: ["BrumeCore", "BrumeTestKit"]),
        .testTarget(name: "BrumeConfigTests", dependencies: ["BrumeConfig"], exclude: ["cases"]),
        .testTarget(name: "BrumeStoreTests", dependencies: ["BrumeStore", "BrumeCore", "BrumeTestKit"]),
        .testTarget(name: "BrumeRulesTests", dependencies: ["BrumeRules", "BrumeCore", "BrumeTestKit"]),
        .testTarget(name: "BrumeSerialTests", dependencies: ["BrumeSerial", "BrumeCore", "BrumeTestKit", "firmware-sim"]),
        .testTarget(name: "BrumeModbusTests", dependencies: ["BrumeModbus", "BrumeCore", "BrumeTestKit", "firmware-sim"]),
        .testTarget(name: "BrumeUplinkTests", dependencies: ["BrumeUplink", "BrumeStore", "BrumeCore", "BrumeMQTT", "BrumeTestKit",
                                                           .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "BrumeRuntimeTests", dependencies: ["BrumeRuntime", "BrumeConfig", "BrumeCore", "BrumeStore", "BrumeTestKit",
                                                            .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "BrumeMQTTTests", dependencies: ["BrumeMQTT", "BrumeCore", "BrumeTestKit"]),
        .testTarget(name: "BrumeBoardTests", dependencies: ["BrumeBoard", "BrumeCore", "BrumeTestKit"]),
        .testTarget(name: "BrumeOneWireTests", dependencies: ["BrumeOneWire", "BrumeCore"]),
        .testTarget(name: "BrumeFunctionsTests", dependencies: ["BrumeFunctions", "BrumeRules", "BrumeCore", "BrumeTestKit"]),
        .testTarget(name: "BrumeGPIOTests", dependencies: ["BrumeGPIO", "BrumeCore"]),
        .testTarget(name: "BrumeLoRaWANTests", dependencies: ["BrumeLoRaWAN", "BrumeCore", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "EndToEndTests", dependencies: ["brume", "firmware-sim", "BrumeCore", "BrumeMQTT", "BrumeStore", "BrumeSerial", "BrumeTestKit",
                                                          .product(name: "CompressNIO", package: "compress-nio")]),
    ],
    swiftLanguageModes: [.v6]
)
