#!/usr/bin/env bash
# Every Catch2 test case must be exactly one CTest entry: a name CMake splits (a ';' in it) or
# that Catch cannot match would otherwise pass as "No test cases matched" and never run.
#   registration_check.sh TEST_BINARY BUILD_DIR
set -euo pipefail
binary=$1 build_dir=$2
# Catch2 v2 exits with the number of tests it listed: not an error here.
catch_names=$({ "$binary" --list-test-names-only || true; } | sed '/^$/d' | sort)
# A name CTest would pass to Catch2 as an option, or that CMake would split, can never run as itself.
bad=$(printf '%s\n' "$catch_names" | grep -E '^-|;' || true)
if [ -n "$bad" ]; then
  echo "test names that start with '-' or hold ';' (CTest passes the first to Catch2 as an option, CMake splits the second):" >&2
  printf '%s\n' "$bad" >&2
  exit 1
fi
ctest_names=$(cd "$build_dir" && ctest -N -LE '^script$' | sed -n 's/^ *Test *#[0-9]*: //p' | sort)
catch_count=$(printf '%s\n' "$catch_names" | grep -c .)
ctest_count=$(printf '%s\n' "$ctest_names" | grep -c .)
if [ "$catch_names" != "$ctest_names" ]; then
  echo "Catch2 has $catch_count test cases, CTest $ctest_count entries; they differ in:" >&2
  diff <(printf '%s\n' "$catch_names") <(printf '%s\n' "$ctest_names") >&2 || true
  echo "rename the test cases above (no ';' in a test name, none starting with '--')" >&2
  exit 1
fi
echo "$catch_count Catch2 test cases, $ctest_count CTest entries: the same names"
