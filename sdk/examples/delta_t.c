/* A heating circuit's temperature difference (flow - return), a derived metric across two
 * streams: the function keeps the latest of each per call in its own memory (its state lives
 * as long as the instance: across readings and reloads that leave the module unchanged).
 * Match it to ONE circuit, "heating/flow_temperature" and "heating/return_temperature" (the
 * state is one pair: a second circuit needs a second [[function]] with its own instance); each
 * reading is kept and, once both are known, "delta_t" is emitted with the reading's time. */
#include "brume.h"

static double flow = 0, ret = 0;
static int have_flow = 0, have_ret = 0;

BRUME_READING(delta_t)
static int delta_t(const brume_record *in) {
    if (in->type != BRUME_NUMBER) return BRUME_KEEP;
    if (brume_metric_is(in, "flow_temperature")) { flow = in->number; have_flow = 1; }
    else if (brume_metric_is(in, "return_temperature")) { ret = in->number; have_ret = 1; }
    else return BRUME_KEEP;
    if (have_flow && have_ret) brume_emit_number(in, "delta_t", flow - ret);
    return BRUME_KEEP;
}
