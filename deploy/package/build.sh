#!/bin/sh
# Builds the Debian package (build-pkg/stsync_<version>_<arch>.deb) and, when docker is there,
# the container image (stsync:<version>). Neither is part of CI: run it on a release machine.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cmake -S . -B build-pkg -DCMAKE_BUILD_TYPE=Release -DSTSYNC_BUILD_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/usr
cmake --build build-pkg -j"$(nproc)" --target stsync
(cd build-pkg && cpack -G DEB)
ls -l build-pkg/*.deb
VERSION=$(sed -n 's/^project(stsync VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
if [ "${SKIP_DOCKER:-}" = 1 ]; then
  echo "SKIP_DOCKER=1: image skipped"
elif ! command -v docker >/dev/null 2>&1; then
  echo "docker not found: image skipped"
elif ! docker info >/dev/null 2>&1; then
  echo "no docker daemon: image skipped"
else
  docker build -f deploy/Dockerfile -t "stsync:$VERSION" .
fi
