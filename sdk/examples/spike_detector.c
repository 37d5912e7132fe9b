/* A window function: in each closed window, counts the readings more than 3 standard
 * deviations from the window's mean (a small anomaly detector) and emits the count as
 * "<metric>.spikes" at the window's end; the raw readings go on (keep_raw = true). A window
 * needs more than 10 readings for one to stand 3 deviations out (population z-score). */
#include "brume.h"

static double sqrt_(double x) {          /* Newton: no libm here */
    if (x <= 0) return 0;
    double g = x > 1 ? x : 1;
    for (int i = 0; i < 40; i++) g = 0.5 * (g + x / g);
    return g;
}

BRUME_WINDOW(spikes)
static int spikes(const brume_record *in, int n) {
    double sum = 0, sq = 0;
    const brume_record *r = in;
    for (int i = 0; i < n; i++, r = brume_next(r)) { sum += r->number; sq += r->number * r->number; }
    double mean = sum / n, sd = sqrt_(sq / n - mean * mean);
    int count = 0;
    r = in;
    for (int i = 0; i < n; i++, r = brume_next(r)) if (sd > 0 && (r->number - mean > 3 * sd || mean - r->number > 3 * sd)) count++;
    char metric[160];
    uint32_t ml = in->metric_len;
    if (ml > 140) return -1;
    const char *m = brume_metric(in);
    for (uint32_t i = 0; i < ml; i++) metric[i] = m[i];
    const char *suffix = ".spikes";
    for (int i = 0; suffix[i]; i++) metric[ml++] = suffix[i];
    brume_emit_value(brume_device(in), in->device_len, metric, ml, 0, BRUME_NUMBER, count, 0, 0);
    return BRUME_DONE;
}
