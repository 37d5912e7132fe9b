/* A derived metric: a pump's hydraulic efficiency from its flow, with the head and the
 * electrical power the manufacturer's sheet gives (a fixed operating point here).
 * On every "flow" reading (m3/h) it keeps the reading and emits "efficiency" (%). */
#include "brume.h"

#define HEAD_M 32.0        /* m */
#define POWER_KW 5.5       /* kW drawn at the operating point */

BRUME_READING(efficiency)
static int efficiency(const brume_record *in) {
    if (in->type != BRUME_NUMBER || !brume_metric_is(in, "flow")) return BRUME_KEEP;
    if (in->number < 0) return -1;                        /* a negative flow: an error, counted */
    double hydraulic_kw = 1000.0 * 9.81 * (in->number / 3600.0) * HEAD_M / 1000.0;
    brume_emit_number(in, "efficiency", 100.0 * hydraulic_kw / POWER_KW);
    return BRUME_KEEP;
}
