#!/usr/bin/env bash
# The local demo: a field broker and a "cloud" broker (Mosquitto on loopback),
# simulated sensors (firmware-sim), the gateway, and the cloud counter printing
# each batch as it arrives. Runs for DEMO_SECONDS (default 30), then stops
# everything cleanly and prints what the cloud received.
#
#   scripts/demo.sh            # or DEMO_SECONDS=120 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
SECONDS_TO_RUN="${DEMO_SECONDS:-30}"

echo "== building brume and firmware-sim"
swift build --product brume >/dev/null
swift build --product firmware-sim >/dev/null
BIN="$(swift build --show-bin-path)"

DEMO=var/demo
rm -rf "$DEMO"; mkdir -p "$DEMO"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
FIELD_PORT=$(free_port); CLOUD_PORT=$(free_port); LORA_PORT=$(free_port)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

for b in field:$FIELD_PORT cloud:$CLOUD_PORT; do
  name=${b%%:*}; port=${b##*:}
  mkdir -p "$DEMO/$name"
  cat > "$DEMO/$name/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
user root
persistence true
persistence_location $PWD/$DEMO/$name/
max_queued_messages 1000000
max_inflight_messages 0
set_tcp_nodelay true
CONF
  mosquitto -c "$DEMO/$name/mosquitto.conf" >"$DEMO/$name/log" 2>&1 &
  PIDS+=($!)
done
sleep 0.5
echo "== field broker on 127.0.0.1:$FIELD_PORT, cloud broker on 127.0.0.1:$CLOUD_PORT"

# The canonical gateway.toml, pointed at the demo brokers and data folder.
sed -e "s#mqtt://127.0.0.1:18831\"#mqtt://127.0.0.1:$CLOUD_PORT\"#g" \
    -e "s#mqtt://127.0.0.1:1883\"#mqtt://127.0.0.1:$FIELD_PORT\"#g" \
    -e "s#^data_dir = .*#data_dir = \"$DEMO/var\"#" \
    -e "s#\"/dev/ttyUSB0\"#\"$PWD/$DEMO/ttyBOILER\"#" \
    -e "s#\"/dev/ttyACM0\"#\"$PWD/$DEMO/ttyGPS\"#" \
    -e "s#\"/dev/ttyUSB1\"#\"$PWD/$DEMO/ttyMETERS\"#" gateway.toml > "$DEMO/gateway.toml"
# This site's own sensors in conf.d (merged into gateway.toml by brume): two 1-Wire probes on a
# simulated w1 bus (one CRC failure in seven: refused and counted) and the board's health.
mkdir -p "$DEMO/conf.d"
cat > "$DEMO/conf.d/10-site-sensors.toml" <<TOML
[[source]]
name = "probes"
kind = "onewire"
interval = "2s"
root = "$PWD/$DEMO/w1"
device = "heating"
probes = [
  { id = "28-000000000001", metric = "flow_temperature" },
  { id = "28-000000000002", metric = "return_temperature" },
]

[[source]]
name = "board"
kind = "board"
interval = "10s"

# Two LoRaWAN soil sensors behind a packet forwarder (firmware-sim lorawan: real frames, one MIC
# in nine corrupted: refused and counted).
[[source]]
name = "lora"
kind = "lorawan"
listen = "127.0.0.1:$LORA_PORT"
devices = [
  { dev_addr = "26010001", device = "soil-1", nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C", app_s_key = "000102030405060708090A0B0C0D0E0F" },
  { dev_addr = "26010002", device = "soil-2", nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C", app_s_key = "000102030405060708090A0B0C0D0E0F" },
]

# A water meter's pulse output and a door contact on GPIO (a simulated chip here: this demo
# runs anywhere; on a Pi, chip = "gpiochip0").
[[source]]
name = "gpio"
kind = "gpio"
chip = "simulated:$PWD/$DEMO/gpio"
interval = "5s"
device = "pumphouse"
inputs = [
  { line = 17, metric = "door_open", bias = "pull-up", active_low = true },
  { line = 27, metric = "water_m3", counter = "falling", scale = 0.001, bias = "pull-up" },
]
TOML
mkdir -p "$DEMO/gpio"
# A fog function in WebAssembly (docs/functions.md): the heating circuit's flow - return
# temperature, built from C with the toolchain's clang (sdk/build.sh).
mkdir -p "$DEMO/functions"
sdk/build.sh sdk/examples/delta_t.c "$DEMO/functions/delta_t.wasm" >/dev/null
cat > "$DEMO/conf.d/20-functions.toml" <<TOML
[[function]]
name = "delta_t"
module = "functions/delta_t.wasm"
run = "reading"
match = ["heating/flow_temperature", "heating/return_temperature"]
TOML
"$BIN/firmware-sim" onewire --root "$PWD/$DEMO/w1" --probes 2 --rate 1 --crc-fail-every 7 >"$DEMO/w1.log" 2>&1 &
PIDS+=($!)
"$BIN/brume" check "$DEMO/gateway.toml"

# Serial devices on pseudo-terminals: a kv sensor, a GPS receiver replaying a real log, Modbus meters.
"$BIN/firmware-sim" serial --link "$PWD/$DEMO/ttyBOILER" --format kv --rate 2 --actuate VALVE --actuator-log "$DEMO/valve.log" >"$DEMO/boiler.log" 2>&1 &
PIDS+=($!)
# Two energy meters on a Modbus RTU line (libmodbus slaves on a pty).
"$BIN/firmware-sim" modbus --rtu "$PWD/$DEMO/ttyMETERS" --units 1,2 >"$DEMO/meters-rtu.log" 2>&1 &
PIDS+=($!)
"$BIN/firmware-sim" serial --link "$PWD/$DEMO/ttyGPS" --format nmea --replay firmware-sim/data/ublox-neo-m9n-sample.nmea --rate 10 >"$DEMO/gps.log" 2>&1 &
PIDS+=($!)
sleep 0.3
"$BIN/firmware-sim" cloud --broker "mqtt://127.0.0.1:$CLOUD_PORT" --topic 'brume/+/telemetry' --follow \
  --ready-file "$DEMO/cloud.ready" > "$DEMO/cloud.out" 2>&1 &
CLOUD_PID=$!; PIDS+=($CLOUD_PID)
"$BIN/brume" run --config "$DEMO/gateway.toml" 2> "$DEMO/brume.log" &
BRUME_PID=$!; PIDS+=($BRUME_PID)
sleep 1
"$BIN/firmware-sim" lorawan --server "127.0.0.1:$LORA_PORT" --devices 2 --period 3 --bad-mic-every 9 >"$DEMO/lora.log" 2>&1 &
PIDS+=($!)
"$BIN/firmware-sim" gpio --dir "$PWD/$DEMO/gpio" --pulse-rate 2 --door-every 15 >"$DEMO/gpio.log" 2>&1 &
PIDS+=($!)
# Three kinds of MQTT sensor nodes, matching the three MQTT sources of gateway.toml.
"$BIN/firmware-sim" sensors --broker "mqtt://127.0.0.1:$FIELD_PORT" --devices 3 --metrics 2 --rate 2 --style number --prefix sensors >"$DEMO/sensors.log" 2>&1 &
PIDS+=($!)
"$BIN/firmware-sim" sensors --broker "mqtt://127.0.0.1:$FIELD_PORT" --devices 2 --metrics 3 --rate 1 --style multi --prefix nodes >"$DEMO/nodes.log" 2>&1 &
PIDS+=($!)
"$BIN/firmware-sim" sensors --broker "mqtt://127.0.0.1:$FIELD_PORT" --devices 2 --metrics 1 --rate 1 --style json --prefix meters >"$DEMO/meters.log" 2>&1 &
PIDS+=($!)

echo "== running for ${SECONDS_TO_RUN}s: batches arriving at the cloud (brume logs: $DEMO/brume.log)"
tail -n +1 -f "$DEMO/cloud.out" &
TAIL_PID=$!
sleep "$SECONDS_TO_RUN"
kill $TAIL_PID 2>/dev/null || true
echo "== stopping the gateway (SIGTERM drains sources into the outbox)"
kill -TERM $BRUME_PID; wait $BRUME_PID && echo "brume exited 0"
sleep 0.5
kill -TERM $CLOUD_PID; wait $CLOUD_PID || true
echo "== what the cloud received:"
grep "^cloud: received\|^cloud: readings per device" "$DEMO/cloud.out" || tail -n 2 "$DEMO/cloud.out"
grep -m1 "function loaded" "$DEMO/brume.log" || true
