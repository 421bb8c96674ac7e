// libFuzzer target: see ts::fuzz::retry_after in fuzz_entry.h (scripts/fuzz.sh builds and runs it).
#include "fuzz_entry.h"

TS_FUZZ_TARGET(ts::fuzz::retry_after)
