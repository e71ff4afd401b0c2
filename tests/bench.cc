// Benchmarks (not part of CTest): printed figures, ratios measured side by side in one run.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main() { return 0; }
