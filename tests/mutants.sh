#!/usr/bin/env bash
# Plants each bug of tests/mutants.txt, one at a time, in a scratch copy of the checkout, rebuilds,
# runs the tests that should catch it, and prints caught / MISSED. Exit 0 when every mutant is
# caught. Starts its own PostgreSQL (like tests/run.sh) and stops it.
#   tests/mutants.sh            every mutant
#   tests/mutants.sh NAME…      only these
set -euo pipefail
STSYNC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$STSYNC_ROOT/deploy/lib.sh"

scratch="$STSYNC_ROOT/.stsync-local/mutants"
mkdir -p "$scratch/src"
# The checkout's tracked files as they are now (uncommitted edits included).
(cd "$STSYNC_ROOT" && git ls-files -z | xargs -0 tar cf -) | tar xf - -C "$scratch/src"
stsync_install_deps
cmake -S "$scratch/src" -B "$scratch/build" -DCMAKE_BUILD_TYPE=Release >"$scratch/build.log" 2>&1
cmake --build "$scratch/build" -j"$(nproc)" >>"$scratch/build.log" 2>&1

pg_data="$STSYNC_ROOT/.stsync-local/mutants-pg-$$"
cleanup() { stsync_pg_stop "$pg_data"; rm -rf "$pg_data"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
STSYNC_PG_FSYNC=off stsync_pg_start "$pg_data" 25700
export STSYNC_TEST_DATABASE_URL="host=127.0.0.1 port=$STSYNC_PG_PORT user=stsync dbname=stsync"
export STSYNC_PG_DATA="$pg_data"

caught=0 missed=0 invalid=0
while IFS=$'\t' read -r name file find replace tests; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  target="$scratch/src/$file"
  original=$(cat "$target"; printf x)
  original=${original%x}
  if [ "$(grep -cF -- "$find" "$target")" != 1 ]; then
    printf '%-44s INVALID (the text to plant into is not in %s exactly once)\n' "$name" "$file"
    invalid=$((invalid + 1))
    continue
  fi
  printf '%s' "${original/"$find"/"$replace"}" >"$target"
  if ! cmake --build "$scratch/build" -j"$(nproc)" >"$scratch/build.log" 2>&1; then
    printf '%-44s INVALID (does not build)\n' "$name"
    invalid=$((invalid + 1))
  elif (cd "$scratch/build" && ctest -R "$tests" --timeout 180 -j2 >"$scratch/$name.log" 2>&1); then
    printf '%-44s MISSED by: %s\n' "$name" "$tests"
    missed=$((missed + 1))
  else
    printf '%-44s caught (%s failing)\n' "$name" "$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(Failed|Timeout)' "$scratch/$name.log")"
    caught=$((caught + 1))
  fi
  printf '%s' "$original" >"$target"
done <"$STSYNC_ROOT/tests/mutants.txt"
cmake --build "$scratch/build" -j"$(nproc)" >"$scratch/build.log" 2>&1  # back to the unmutated code
echo "mutants: $caught caught, $missed missed, $invalid invalid"
[ "$missed" -eq 0 ] && [ "$invalid" -eq 0 ]
