// A Brume function in Embedded Swift (docs/functions.md): value' = value * 1.0125 - 0.42 for every
// number, as sdk/examples/calibrate.wat does; other values are kept. No allocation, no runtime:
// it links with wasm-ld alone. Build: sdk/build.sh sdk/examples/calibrate.swift calibrate.wasm
@_extern(wasm, module: "env", name: "brume_emit") @_extern(c)
func brume_emit(_ record: UnsafeRawPointer) -> Int32

// The exchange area: 1 KiB in the module's memory (a global has a fixed address).
nonisolated(unsafe) var area = InlineArray<128, UInt64>(repeating: 0)

@inline(__always) func base() -> UnsafeMutableRawPointer {
    withUnsafeMutablePointer(to: &area) { UnsafeMutableRawPointer($0) }
}

@_expose(wasm, "brume_buffer") @_cdecl("brume_buffer")
func brumeBuffer() -> Int32 { Int32(Int(bitPattern: base())) }

@_expose(wasm, "brume_buffer_size") @_cdecl("brume_buffer_size")
func brumeBufferSize() -> Int32 { 1024 }

@_expose(wasm, "brume_reading") @_cdecl("brume_reading")
func brumeReading(_ n: Int32) -> Int32 {
    let p = base()
    guard p.load(fromByteOffset: 16, as: UInt32.self) == 0 else { return 1 }   // not a number: keep
    let v = p.load(fromByteOffset: 8, as: Double.self)
    p.storeBytes(of: v * 1.0125 - 0.42, toByteOffset: 8, as: Double.self)
    _ = brume_emit(UnsafeRawPointer(p))
    return 0
}
