// swift-tools-version:6.1
// libFuzzer targets for Brume's parsers (see README.md). Build and run with ./run.sh; by hand:
//
//   swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//   .build/release/fuzz-json corpus/fuzz-json
//
// A separate package so that fuzzing flags never reach the gateway's own build. It needs the
// root package to export the libraries BrumeCore, BrumeSerial, BrumeStore, BrumeConfig and BrumeLoRaWAN.
//
// Each target defines `LLVMFuzzerTestOneInput` and `<module>_main`: SwiftPM links executables
// with `main` aliased to `<module>_main` (so tests can link them), which would hide libFuzzer's
// own `main`; ours calls `LLVMFuzzerRunDriver` instead.
import PackageDescription

let targets = ["fuzz-json", "fuzz-payload", "fuzz-framers", "fuzz-nmea", "fuzz-command", "fuzz-wire", "fuzz-toml", "fuzz-modbus", "fuzz-lorawan"]
let brume: [String: [String]] = [
    "fuzz-json": ["BrumeCore"],
    "fuzz-payload": ["BrumeCore", "BrumeRules"],
    "fuzz-framers": ["BrumeCore", "BrumeSerial"],
    "fuzz-nmea": ["BrumeCore", "BrumeSerial"],
    "fuzz-command": ["BrumeCore"],
    "fuzz-wire": ["BrumeCore", "BrumeStore"],
    "fuzz-toml": ["BrumeConfig"],
    "fuzz-modbus": ["BrumeCore"],
    "fuzz-lorawan": ["BrumeCore", "BrumeLoRaWAN"],
]

let package = Package(
    name: "BrumeFuzz",
    platforms: [.macOS(.v15)],
    products: targets.map { .executable(name: $0, targets: [$0]) },
    dependencies: [
        .package(name: "Brume", path: "../"),
    ],
    targets: [
        // Declares libFuzzer's LLVMFuzzerRunDriver (header only).
        .target(name: "CFuzzerDriver"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzerDriver", .product(name: "BrumeCore", package: "Brume")]),
    ] + targets.map { name in
        .executableTarget(name: name, dependencies: ["FuzzSupport"] + brume[name]!.map { .product(name: $0, package: "Brume") })
    },
    swiftLanguageModes: [.v6]
)
