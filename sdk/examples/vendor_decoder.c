/* A vendor's binary payload: a 9-byte frame from a tank sensor.
 *   byte 0      frame type 0x01
 *   bytes 1-2   level, cm, big-endian unsigned
 *   bytes 3-4   temperature, 0.1 degC, big-endian signed
 *   byte 5      battery, %
 *   byte 6      flags: bit 0 = lid open
 *   bytes 7-8   CRC-16/MODBUS of bytes 0-6, little-endian
 * Emits level (m), temperature (degC), battery (%) and lid_open (bool) for the topic's device. */
#include "brume.h"

static uint16_t crc16_modbus(const uint8_t *p, uint32_t n) {
    uint16_t crc = 0xFFFF;
    for (uint32_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++) crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xA001) : (uint16_t)(crc >> 1);
    }
    return crc;
}

BRUME_DECODE(decode)
static int decode(const brume_record *in) {
    const uint8_t *p = brume_bytes(in);
    if (in->text_len != 9) { brume_log_text(BRUME_LOG_WARNING, "tank frame: expected 9 bytes"); return -2; }
    if (p[0] != 0x01) return -3;
    if (crc16_modbus(p, 7) != (uint16_t)(p[7] | (p[8] << 8))) return -4;
    const char *dev = brume_device(in);
    uint32_t dl = in->device_len;
    uint16_t level = (uint16_t)((p[1] << 8) | p[2]);
    int16_t temp = (int16_t)((p[3] << 8) | p[4]);
    brume_emit_value(dev, dl, "level", 5, 0, BRUME_NUMBER, level / 100.0, 0, 0);
    brume_emit_value(dev, dl, "temperature", 11, 0, BRUME_NUMBER, temp / 10.0, 0, 0);
    brume_emit_value(dev, dl, "battery", 7, 0, BRUME_NUMBER, p[5], 0, 0);
    brume_emit_value(dev, dl, "lid_open", 8, 0, BRUME_BOOL, p[6] & 1, 0, 0);
    return BRUME_DONE;
}
