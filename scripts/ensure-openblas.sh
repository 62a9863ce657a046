#!/bin/sh
# Make OpenBLAS available to MLX's CPU backend (Linux only; best effort, never fatal).
[ "$(uname -s)" = "Linux" ] || exit 0
for lib in /usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3 /usr/lib/*-linux-gnu/libopenblas.so.0 /usr/lib64/libopenblas.so.0; do
  [ -e "$lib" ] && exit 0
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing OpenBLAS (libopenblas0-pthread) for a fast CPU backend..."
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenblas0-pthread >/dev/null 2>&1 \
      || echo "OpenBLAS could not be installed; mlxk falls back to the bundled (slow) BLAS."
  fi
else
  echo "Tip: install OpenBLAS for a faster CPU backend (Debian/Ubuntu: sudo apt-get install libopenblas0-pthread)."
fi
exit 0
