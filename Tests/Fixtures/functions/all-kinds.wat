;; A module with the three entry points, each keeping its input (BRUME_KEEP) or emitting
;; nothing: the configuration cases use its build (Tests/BrumeConfigTests/cases/*functions*/
;; all-kinds.wasm, checked against a fresh wat2wasm build by WasmFunctionTests).
(module
  (memory (export "memory") 1)
  (func (export "brume_buffer") (result i32) (i32.const 1024))
  (func (export "brume_buffer_size") (result i32) (i32.const 4096))
  (func (export "brume_reading") (param i32) (result i32) (i32.const 1))
  (func (export "brume_window") (param i32) (result i32) (i32.const 0))
  (func (export "brume_decode") (param i32) (result i32) (i32.const 0)))
