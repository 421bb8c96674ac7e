// libFuzzer target: see ts::fuzz::headers in fuzz_entry.h (scripts/fuzz.sh builds and runs it).
#include "fuzz_entry.h"

TS_FUZZ_TARGET(ts::fuzz::headers)
