// swift-tools-version:6.1
// Microbenchmarks of Brume's per-reading hot paths (docs/PERFORMANCE.md, "Microbenchmarks").
//
//   cd bench/micro && swift package benchmark
//
// A separate package so that the benchmark dependency stays out of the gateway's own graph. It
// needs the root package to export the libraries BrumeCore, BrumeSerial, BrumeRules, BrumeStore.
//
// Traits: only "MallocInterposer" (allocation counts; a package, nothing to install on Swift
// 6.3+). The default "RuntimeInterposer" trait (ARC counters on Linux with Swift 6.3) is left
// off: its package, swift-runtime-interposer, is not needed for the metrics used here.
import PackageDescription

let package = Package(
    name: "BrumeMicroBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Brume", path: "../.."),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "BrumeBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "BrumeCore", package: "Brume"),
                .product(name: "BrumeSerial", package: "Brume"),
                .product(name: "BrumeRules", package: "Brume"),
                .product(name: "BrumeFunctions", package: "Brume"),
                .product(name: "BrumeStore", package: "Brume"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/BrumeBenchmarks",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "package-benchmark"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
