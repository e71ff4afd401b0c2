#!/usr/bin/env bash
# The layers of src/ (base -> config -> api -> db -> engine -> cli): a file may include headers of
# its own layer and of the layers below it, never above. The build enforces this through include
# paths (a layer's headers are only on the path of the layers above it); this check names the
# offending line, and also catches an include written with a relative path.
set -euo pipefail
src="${1:-$(cd "$(dirname "$0")/../../src" && pwd)}"
layers=(base config api db engine cli)
rank() { local i; for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }
bad=0
for layer in "${layers[@]}"; do
  mine=$(rank "$layer")
  for file in "$src/$layer"/*; do
    while IFS= read -r line; do
      header=$(sed -E 's/^#include "([^"]+)".*/\1/' <<<"$line")
      owner=""
      for other in "${layers[@]}"; do
        [ -f "$src/$other/$(basename "$header")" ] && owner=$other
      done
      [ -n "$owner" ] || continue  # a generated or third-party header
      if [ "$(rank "$owner")" -gt "$mine" ] || [[ "$header" == */* ]]; then
        echo "src/$layer/$(basename "$file"): $line: $owner is above $layer (or a path across layers)"
        bad=1
      fi
    done < <(grep -E '^#include "' "$file" || true)
  done
done
[ "$bad" -eq 0 ] && echo "layering: every include goes down (${layers[*]})"
exit "$bad"
