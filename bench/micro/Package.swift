// swift-tools-version:6.1
// Microbenchmarks for Brume (ordo-one/package-benchmark). Run from this folder:
//   swift package benchmark
// A separate package so the benchmark dependency stays out of the gateway's own graph.
import PackageDescription

let package = Package(
    name: "BrumeMicroBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Brume", path: "/work/scratch/brume-root"),
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
