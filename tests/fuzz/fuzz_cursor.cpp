// libFuzzer target: see ts::fuzz::cursor in fuzz_entry.h (scripts/fuzz.sh builds and runs it).
#include "fuzz_entry.h"

TS_FUZZ_TARGET(ts::fuzz::cursor)
