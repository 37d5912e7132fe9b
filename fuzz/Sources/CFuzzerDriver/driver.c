// Header-only module; this file exists because SwiftPM C targets need a source file.
#include "CFuzzerDriver.h"
