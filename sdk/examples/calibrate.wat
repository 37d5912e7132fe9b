;; A calibration line from a lab sheet, in WebAssembly text (Debian's wabt: wat2wasm):
;; value' = value * 1.0125 - 0.42, for every matching number; other values pass unchanged.
(module
  (import "env" "brume_emit" (func $emit (param i32) (result i32)))
  (memory (export "memory") 1 1)
  (func (export "brume_buffer") (result i32) (i32.const 1024))
  (func (export "brume_buffer_size") (result i32) (i32.const 4096))
  (func (export "brume_reading") (param $n i32) (result i32)
    ;; not a number (type at offset 16 is not 0): keep the input as it is
    (if (i32.ne (i32.load (i32.const 1040)) (i32.const 0)) (then (return (i32.const 1))))
    ;; rewrite the value in place (offset 8) and emit the record back
    (f64.store (i32.const 1032)
      (f64.sub (f64.mul (f64.load (i32.const 1032)) (f64.const 1.0125)) (f64.const 0.42)))
    (drop (call $emit (i32.const 1024)))
    (i32.const 0)))
