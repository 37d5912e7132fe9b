#!/usr/bin/env bash
# The "100 rules + 5 functions" configuration of docs/PERFORMANCE.md ("Fog functions"), for
# bench/e2e.sh --extra-config: each load reading (devD/seq, 10 devices) crosses 10 rules and
# 5 trivial WebAssembly functions (they read the value and keep the reading: BRUME_KEEP), so
# the cloud still counts every sequence number once.
#   bench/rules-functions.sh > /tmp/rf.toml && bench/e2e.sh --loads loadgen --extra-config /tmp/rf.toml
set -euo pipefail
dir="$(mktemp -d /tmp/brume-rf-XXXXXX)"
cat > "$dir/keep.wat" <<'WAT'
(module
  (memory (export "memory") 1)
  (func (export "brume_buffer") (result i32) (i32.const 1024))
  (func (export "brume_buffer_size") (result i32) (i32.const 4096))
  (func (export "brume_reading") (param i32) (result i32)
    (if (f64.lt (f64.load (i32.const 1032)) (f64.const 0)) (then (return (i32.const -1))))
    (i32.const 1)))
WAT
wat2wasm "$dir/keep.wat" -o "$dir/keep.wasm"
for i in 1 2 3 4 5; do
  printf '[[function]]\nname = "keep-%d"\nmodule = "%s"\nrun = "reading"\nmatch = "*/seq"\n\n' "$i" "$dir/keep.wasm"
done
for i in $(seq 0 99); do
  printf '[[rule]]\nname = "r%d"\nmatch = "dev%d/seq"\ndrop_if = "value < -%d"\n\n' "$i" $((i % 10)) $((i + 1))
done
