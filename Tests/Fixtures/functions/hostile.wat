;; A hostile reading function for the tests: its behaviour depends on the value.
;; 1 loops for ever, 2 reads far outside its memory, 3 divides by zero, 4 grows its memory by
;; 64 pages (returns the old size, or -1 when refused), 5 emits a NaN, anything else doubles it.
(module
  (import "env" "brume_emit" (func $emit (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "brume_buffer") (result i32) (i32.const 1024))
  (func (export "brume_buffer_size") (result i32) (i32.const 4096))
  (func (export "brume_reading") (param $n i32) (result i32)
    (local $v f64)
    (local.set $v (f64.load (i32.const 1032)))
    (if (f64.eq (local.get $v) (f64.const 1)) (then (loop $l (br $l))))
    (if (f64.eq (local.get $v) (f64.const 2)) (then (drop (i32.load (i32.const 0x7ffffff0)))))
    (if (f64.eq (local.get $v) (f64.const 3)) (then (drop (i32.div_s (i32.const 1) (i32.trunc_f64_s (f64.sub (local.get $v) (f64.const 3)))))))
    (if (f64.eq (local.get $v) (f64.const 4)) (then (return (memory.grow (i32.const 64)))))
    (if (f64.eq (local.get $v) (f64.const 5)) (then (f64.store (i32.const 1032) (f64.div (f64.const 0) (f64.const 0))) (return (call $emit (i32.const 1024)))))
    (f64.store (i32.const 1032) (f64.mul (local.get $v) (f64.const 2)))
    (drop (call $emit (i32.const 1024)))
    (i32.const 0)))
